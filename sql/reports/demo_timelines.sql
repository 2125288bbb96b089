-- Entries of the demo that received two or more steps, longest first, with when each went
-- out (the tick). The times come back as timestamps; demo.format_progress spells them, so the
-- query is the same on every engine.
select
    trigger,
    trigger_key,
    array_agg(step order by step_index) as steps,
    array_agg(sent_as_of order by step_index) as sent_as_of
from nudge.send_ledger
where status = 'sent'
group by trigger, trigger_key
having count(*) >= 2
order by count(*) desc, trigger asc, trigger_key asc
