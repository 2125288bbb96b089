-- Drain nudge serve's landing store into the warehouse. A change the warehouse already has
-- (by change_id: a store drained twice) is written once; one a replayed request moved later
-- takes its new instant. Returns the changes written.
-- {landed} is a registered frame of landing.ConsentChange rows.
insert into nudge.consent_changes as known (
    change_id, customer_id, list, status, changed_at, source, send_id, drained_at
)
select
    landed.change_id,
    landed.customer_id,
    landed.list,
    landed.status,
    landed.changed_at,
    landed.source,
    landed.send_id,
    $drained_at
from {landed} as landed
on conflict (change_id) do update
    set changed_at = excluded.changed_at
    where known.changed_at < excluded.changed_at
returning change_id
