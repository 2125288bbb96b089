-- Scrub the run log's error text: a run whose errors quote one of an erased customer's sends
-- loses the address, the name and the id; any other run loses the address if it quotes it.
-- Parameters: $customer_id, $pseudonym, $pattern (addresses and names), $address_pattern.
with

theirs as (

    select send_id from nudge.send_ledger
    where customer_id = $pseudonym

),

logged_runs as (

    select
        run_id,
        trigger,
        cast(errors as varchar) as errors,
        hold_reason
    from nudge.runs

),

quoting as (

    select
        logged_runs.*,
        logged_runs.run_id in (
            select logged_runs.run_id from theirs
            where strpos(logged_runs.errors, theirs.send_id) > 0
        ) as quotes_theirs
    from logged_runs

),

scrubbed as (

    select
        run_id,
        trigger,
        case
            when quotes_theirs
                then
                    replace(
                        regexp_replace(errors, $pattern, '[erased]', 'gi'),
                        $customer_id,
                        $pseudonym
                    )
            else regexp_replace(errors, $address_pattern, '[erased]', 'gi')
        end as errors,
        regexp_replace(hold_reason, $address_pattern, '[erased]', 'gi') as hold_reason
    from quoting
    where
        quotes_theirs
        or errors ~* $address_pattern
        or hold_reason ~* $address_pattern

)

update nudge.runs as run_log
set
    errors = cast(scrubbed.errors as json),
    hold_reason = scrubbed.hold_reason
from scrubbed
where
    run_log.run_id = scrubbed.run_id
    and run_log.trigger = scrubbed.trigger
    and (
        scrubbed.errors is distinct from cast(run_log.errors as varchar)
        or scrubbed.hold_reason is distinct from run_log.hold_reason
    )
