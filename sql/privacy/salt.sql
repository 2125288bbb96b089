-- The warehouse's salt for erasure hashes and pseudonyms (made once by migration 005).
select salt from nudge.erasure_salt
order by salt
limit 1
