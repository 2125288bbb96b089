-- The first and last UTC day with sends: the report's default range, and the last tick it
-- can name cheaply (the day of the newest send the reporting models saw).
select
    min(sent_on) as first_day,
    max(sent_on) as last_day
from reporting.rpt_trigger_daily
