-- What the providers reported about one customer's sends (and mail to their address), oldest
-- first, for nudge export. Parameters: $customer_id, $emails.
select
    events.send_id,
    events.provider,
    events.event_type,
    events.bounce_type,
    events.is_machine_open,
    events.url,
    events.occurred_at,
    events.received_at
from nudge.email_events as events
left join nudge.send_ledger as ledger
    on events.send_id = ledger.send_id
where
    ledger.customer_id = $customer_id
    or events.email in (select unnest(cast($emails as varchar[])))
order by events.occurred_at, events.event_id
