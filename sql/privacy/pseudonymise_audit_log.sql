-- The audit trail keeps what happened, not to whom: an erased customer's rows get the
-- pseudonym as subject and lose the address, the name and the id from their detail; every
-- other row loses the address and the id (as a JSON string) if it quotes them.
-- Parameters: $customer_id, $pseudonym, $pattern (addresses and names), $address_pattern.
with

scrubbed as (

    select
        audit_id,
        case when subject = $customer_id then $pseudonym else subject end as subject,
        replace(
            regexp_replace(
                detail,
                case when subject = $customer_id then $pattern else $address_pattern end,
                '[erased]',
                'gi'
            ),
            cast(to_json(cast($customer_id as varchar)) as varchar),
            cast(to_json(cast($pseudonym as varchar)) as varchar)
        ) as detail
    from nudge.audit_log

)

update nudge.audit_log as audit_rows
set
    subject = scrubbed.subject,
    detail = scrubbed.detail
from scrubbed
where
    audit_rows.audit_id = scrubbed.audit_id
    and (
        scrubbed.subject is distinct from audit_rows.subject
        or scrubbed.detail is distinct from audit_rows.detail
    )
