-- Of the events being drained, those whose send_id matches no send in the ledger (or that
-- carry none): kept, and counted in the drain's metadata, so an operator sees a webhook that
-- points at the wrong nudge or a provider that drops custom arguments.
-- {landed} is the registered frame being drained.
select count(*) as unmatched
from {landed} as landed
where not exists (
        select 1 from nudge.send_ledger as ledger
        where ledger.send_id = landed.send_id
    )
