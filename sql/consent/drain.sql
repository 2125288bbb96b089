-- Drain nudge serve's landing store into the warehouse: the changes the warehouse does not
-- have yet (by change_id), so a store drained twice counts each change once.
-- {landed} is a registered frame of landing.ConsentChange rows.
insert into nudge.consent_changes (
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
where not exists (
        select 1 from nudge.consent_changes as known
        where known.change_id = landed.change_id
    )
returning change_id
