-- One row per due, not yet sent marketing send of a higher-priority trigger: it takes its
-- customer's frequency-cap slot before the trigger being planned.
-- Parameters: $as_of. {eligibility} is the competing trigger's eligibility relation.
insert into competing_sends
select competitor.customer_id
from {eligibility} as competitor
where
    competitor.is_eligible
    and competitor.category = 'marketing'
    and competitor.due_at <= $as_of
    and $as_of <= competitor.expires_at
    and competitor.send_id not in (
        select ledger.send_id from nudge.send_ledger as ledger
        where ledger.status != 'deferred'
    )
