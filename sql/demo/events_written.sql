-- How many events the generator has staged, and the first and last row id: committed appends
-- to a new table number their rows 0, 1, 2... in the order they were written.
select
    count(*) as n_rows,
    min(rowid) as first_row_id,
    max(rowid) as last_row_id
from raw.__nudge_demo_events
