-- Addresses as staging normalises them (lower(trim()), the normalize_email macro), so an
-- address typed by an operator matches the warehouse's. Parameters: $emails.
with

given as (

    select unnest(cast($emails as varchar[])) as email

)

select distinct lower(trim(email)) as email
from given
where nullif(lower(trim(email)), '') is not null
order by email
