-- Remember erased addresses as salted hashes only (privacy.erasure_hash, the dbt macro
-- erasure_hash): suppressed for good, even when the shop imports them again. An address
-- erased before keeps its first row. Parameters: $email_hashes, $erased_at, $audit_id.
insert into nudge.erasures (email_hash, erased_at, audit_id)
with

erased as (

    select distinct unnest(cast($email_hashes as varchar[])) as email_hash

),

known as (

    select email_hash from nudge.erasures

)

select
    erased.email_hash,
    $erased_at as erased_at,
    $audit_id as audit_id
from erased
where erased.email_hash not in (select known.email_hash from known)
