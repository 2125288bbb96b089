-- The audit rows about one customer, oldest first. Parameters: $customer_id.
select
    audit_id,
    occurred_at,
    action,
    actor,
    subject,
    detail
from nudge.audit_log
where subject = $customer_id
order by occurred_at, audit_id
