-- The warehouse's salt for erasure hashes and pseudonyms (nudge.erasure_salt, one row).
select salt from nudge.erasure_salt
