-- Which of these address hashes were erased, and when. Parameters: $email_hashes.
select
    email_hash,
    erased_at,
    audit_id
from nudge.erasures
where email_hash in (select unnest(cast($email_hashes as varchar[])))
order by erased_at
