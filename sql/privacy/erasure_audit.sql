-- The erasures recorded for these pseudonyms, or for these erased addresses (by their hash),
-- oldest first. Parameters: $subjects, $email_hashes.
select
    audit_id,
    occurred_at,
    subject,
    detail
from nudge.audit_log
where
    action = 'erasure'
    and (
        subject in (select unnest(cast($subjects as varchar[])))
        or audit_id in (
            select erasures.audit_id from nudge.erasures as erasures
            where erasures.email_hash in (select unnest(cast($email_hashes as varchar[])))
        )
    )
order by occurred_at, audit_id
