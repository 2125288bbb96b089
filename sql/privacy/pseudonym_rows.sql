-- How many rows nudge keeps under one pseudonym (an erased customer), per table.
-- Parameters: $pseudonym.
select
    'nudge.send_ledger' as relation,
    count(*) as row_count
from nudge.send_ledger
where customer_id = $pseudonym
union all
select
    'nudge.consent_changes' as relation,
    count(*) as row_count
from nudge.consent_changes
where customer_id = $pseudonym
union all
select
    'nudge.audit_log' as relation,
    count(*) as row_count
from nudge.audit_log
where subject = $pseudonym
