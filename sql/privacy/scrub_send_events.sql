-- Scrub the error text of the send history: an erased customer's sends (found by their
-- pseudonym, after pseudonymise_ledger.sql) lose the address, the name and the id; any other
-- event that quotes the address loses the address. Parameters: $customer_id, $pseudonym,
-- $pattern (addresses and names), $address_pattern. {row_id}: the engine's row identity
-- (DuckDB's rowid, PostgreSQL's ctid): the history has no key of its own.
with

theirs as (

    select send_id from nudge.send_ledger
    where customer_id = $pseudonym

),

scrubbed as (

    select
        events.{row_id} as row_id,
        case
            when events.send_id in (select theirs.send_id from theirs)
                then
                    replace(
                        regexp_replace(events.error, $pattern, '[erased]', 'gi'),
                        $customer_id,
                        $pseudonym
                    )
            else regexp_replace(events.error, $address_pattern, '[erased]', 'gi')
        end as error
    from nudge.send_events as events
    where
        events.send_id in (select theirs.send_id from theirs)
        or events.error ~* $address_pattern

)

update nudge.send_events as events
set error = scrubbed.error
from scrubbed
where events.{row_id} = scrubbed.row_id and scrubbed.error is distinct from events.error
