-- Entries of the demo that received two or more steps, longest first, with when each went
-- out (the tick): sql/reports/demo_timelines.sql in PostgreSQL's spelling (array_agg, to_char).
select
    trigger,
    trigger_key,
    array_agg(step || ' ' || to_char(sent_as_of, 'Dy HH24:MI') order by step_index) as sends
from nudge.send_ledger
where status = 'sent'
group by trigger, trigger_key
having count(*) >= 2
order by count(*) desc, trigger asc, trigger_key asc
