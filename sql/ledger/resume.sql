-- Take over the sends earlier runs left unfinished, re-checked against this tick's eligibility
-- (the caller holds the warehouse lock, so no other run is live):
-- - 'sending' rows may have reached the provider: resent only through an idempotent provider
--   and only while still eligible, else 'unknown' (never resent automatically);
-- - rows past their grace window: 'expired';
-- - rows the rules no longer allow (unsubscribed since, cart ordered, ...): 'skipped' with why;
-- - the rest ('planned', 'failed_retryable'): 'planned' again for this run, rendered from the
--   current eligibility row so a changed name or cart is what goes out.
-- Parameters: $trigger, $run_id, $as_of, $idempotent_providers. {eligibility}: the trigger's table.
update nudge.send_ledger as ledger
set
    status = resumed.next_status,
    error = resumed.next_error,
    context = coalesce(resumed.fresh_context, ledger.context),
    settled_at = case when resumed.next_status = 'planned' then null else now() end,
    run_id = $run_id,
    updated_at = now()
from (
    select
        pending.send_id,
        case
            when
                pending.status = 'sending'
                and (
                    not list_contains($idempotent_providers, pending.provider)
                    or fresh.send_id is null
                    or fresh.rule_exclusion_reason is not null
                    or $as_of > pending.expires_at
                )
                then 'unknown'
            when $as_of > pending.expires_at then 'expired'
            when fresh.rule_exclusion_reason = 'expired' then 'expired'
            when fresh.send_id is null or fresh.rule_exclusion_reason is not null then 'skipped'
            else 'planned'
        end as next_status,
        case
            when pending.status = 'sending'
                then 'run ' || pending.run_id || ' stopped while sending; delivery unknown'
            when $as_of > pending.expires_at or fresh.rule_exclusion_reason = 'expired'
                then 'grace window ended before it could be sent'
            when fresh.send_id is null
                then 'no longer a candidate of the trigger (e.g. the cart was ordered)'
            when fresh.rule_exclusion_reason is not null
                then 'no longer eligible: ' || fresh.rule_exclusion_reason
            else pending.error
        end as next_error,
        -- The whole row as JSON (DuckDB turns a table alias into a struct).
        case when fresh.send_id is not null then to_json(fresh) end as fresh_context  -- noqa: RF02
    from nudge.send_ledger as pending
    left join {eligibility} as fresh
        on pending.send_id = fresh.send_id
    where
        pending.trigger = $trigger
        and pending.run_id != $run_id
        and pending.status in ('planned', 'sending', 'failed_retryable')
) as resumed
where ledger.send_id = resumed.send_id
