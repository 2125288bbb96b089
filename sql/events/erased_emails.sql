-- Which of these address hashes were erased (nudge erase). Parameter: $email_hashes.
select email_hash
from nudge.erasures
where email_hash in (select unnest(cast($email_hashes as varchar[])))
