-- The history of every send of one customer, oldest first. Parameters: $customer_id.
select events.*  -- noqa: AM04
from nudge.send_events as events
inner join nudge.send_ledger as ledger
    on events.send_id = ledger.send_id
where ledger.customer_id = $customer_id
order by events.recorded_at, events.send_id
