-- Drain the provider events nudge serve stored into the warehouse. An event the warehouse
-- already has (by event_id: a store drained twice, or a provider that delivered it again after
-- the store pruned it) is not written again. Returns the events written.
-- {landed} is a registered frame of landing.LandedEvent rows.
insert into nudge.email_events (
    event_id,
    provider,
    provider_event_id,
    send_id,
    email,
    event_type,
    bounce_type,
    is_machine_open,
    url,
    occurred_at,
    received_at,
    payload,
    drained_at
)
select
    landed.event_id,
    landed.provider,
    landed.provider_event_id,
    landed.send_id,
    landed.email,
    landed.event_type,
    landed.bounce_type,
    landed.is_machine_open,
    landed.url,
    landed.occurred_at,
    landed.received_at,
    landed.payload,
    $drained_at
from {landed} as landed
on conflict (event_id) do nothing
returning event_id
