-- Entries of the demo that received two or more steps, longest first, with when each went
-- out (the tick).
select
    trigger,
    trigger_key,
    list(step || ' ' || strftime(sent_as_of, '%a %H:%M') order by step_index) as sends
from nudge.send_ledger
where status = 'sent'
group by trigger, trigger_key
having count(*) >= 2
order by count(*) desc, trigger, trigger_key asc
