-- Which of these pseudonyms belong to someone nudge erase removed (its audit rows name them).
-- Parameter: $subjects.
select distinct subject
from nudge.audit_log
where
    action = 'erasure'
    and subject in (select unnest(cast($subjects as varchar[])))
