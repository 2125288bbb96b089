-- Take over the sends earlier runs (or an earlier attempt of this run) left unfinished,
-- re-reviewed against this tick's eligibility (the caller holds the warehouse lock, so no other
-- run is live). Sends whose provider answer
-- reached the hand-over journal were settled from it just before (recovered_answers.sql):
-- - sends the journal shows handed over without an answer may have reached the provider (so
--   may rows an older release left 'sending', and rows resumed for a resend whose run died).
--   Through an idempotent provider each such request is sent again as it was, under its
--   recorded key, rendered from the context it was first rendered from, so the provider sees
--   the identical request; but only if every send of that request may still go out, else the
--   request is 'unknown'. Through any other provider they are 'unknown': never resent
--   automatically (`nudge resolve-unknown`);
-- - sends never handed over never left the dead run: they are reviewed as planned ones;
-- - rows past their grace window: 'expired';
-- - 'failed_retryable' rows wait until next_attempt_at (backoff across ticks) and give up
--   ('failed_permanent', reason retry_max_age) once older than the maximum retry age;
-- - rows the rules no longer allow (unsubscribed since, cart ordered, exited, ...): 'skipped'
--   with why;
-- - rows that must wait (the recipient's quiet hours began since): left as they are;
-- - 'deferred' rows (frequency cap) are only expired or skipped here; planning releases them;
-- - the rest: 'planned' again for this run, rendered from the current eligibility row so a
--   changed name or cart is what goes out.
-- Parameters: $trigger, $run_id, $as_of, $provider, $idempotent (the current provider honours
-- idempotency keys), $retry_max_age_hours.
-- {eligibility} is the trigger's eligibility relation.
update nudge.send_ledger as ledger
set
    status = resumed.next_status,
    reason = resumed.next_reason,
    error = resumed.next_error,
    context = coalesce(resumed.fresh_context, ledger.context),
    -- In doubt: the key of the request it was in (resent under it, or listed for an operator).
    batch_id = case when resumed.in_doubt then resumed.request_key end,
    -- The first hand-over: providers remember a key for a day from its first use.
    sending_at = least(resumed.handed_over_at, ledger.sending_at),
    next_attempt_at = null,
    settled_at = case when resumed.next_status = 'planned' then null else now() end,
    run_id = $run_id,
    updated_at = now()
from (
    select
        reviewed.send_id,
        case
            when reviewed.in_doubt and reviewed.batch_resendable then 'planned'
            when reviewed.in_doubt then 'unknown'
            when reviewed.is_expired then 'expired'
            when reviewed.is_too_old then 'failed_permanent'
            -- Waiting, not ineligible: night, not due yet, or the customer's best hour ahead.
            when reviewed.rule_reason in ('quiet_hours', 'not_due', 'best_hour') then null
            when reviewed.rule_reason is not null then 'skipped'
            when reviewed.status = 'deferred' then null
            else 'planned'
        end as next_status,
        case
            when reviewed.in_doubt and reviewed.batch_resendable then null
            when reviewed.in_doubt then 'run_died_while_sending'
            when reviewed.is_expired then 'grace_window_ended'
            when reviewed.is_too_old then 'retry_max_age'
            when reviewed.rule_reason is not null then 'no_longer_eligible:' || reviewed.rule_reason
            else reviewed.reason
        end as next_reason,
        case
            when reviewed.in_doubt and reviewed.batch_resendable
                then 'resent with the same idempotency key after run ' || reviewed.run_id
                    || ' stopped while sending'
            when reviewed.in_doubt
                then 'run ' || reviewed.run_id || ' stopped while sending; delivery unknown'
            when reviewed.is_expired then 'grace window ended before it could be sent'
            when reviewed.is_too_old
                then 'gave up retrying after ' || reviewed.attempts || ' attempts: '
                    || coalesce(reviewed.error, 'no error recorded')
            when reviewed.rule_reason = 'not_a_candidate'
                then 'no longer a candidate of the trigger (e.g. the cart was ordered)'
            when reviewed.rule_reason is not null
                then 'no longer eligible: ' || reviewed.rule_reason
            else reviewed.error
        end as next_error,
        reviewed.in_doubt,
        reviewed.request_key,
        reviewed.handed_over_at,
        -- An interrupted idempotent batch keeps its first rendering: same key, same body.
        case when not reviewed.in_doubt then reviewed.fresh_context end as fresh_context
    from (
        select
            pending.*,
            -- The whole current row as JSON (DuckDB turns a table alias into a struct), only
            -- for the pending rows: converting the whole eligibility table would cost seconds.
            case
                when fresh.send_id is not null then to_json(fresh)  -- noqa: RF02
            end as fresh_context,
            -- Handed to the provider by a run that died (the journal says so, or an older
            -- release left it 'sending'), or resumed for a same-key resend by a run that then
            -- died: either way it may have been delivered.
            handed.send_id is not null
            or pending.status = 'sending'
            or (pending.status = 'planned' and pending.batch_id is not null) as in_doubt,
            coalesce(handed.request_key, pending.batch_id) as request_key,
            handed.handed_over_at,
            $as_of > pending.expires_at or fresh.rule_exclusion_reason = 'expired' as is_expired,
            pending.status = 'failed_retryable'
            and $as_of > pending.as_of + interval '1 hour' * cast($retry_max_age_hours as bigint)
                as is_too_old,
            case
                when fresh.send_id is null then 'not_a_candidate'
                else fresh.rule_exclusion_reason
            end as rule_reason,
            -- Every send of the interrupted request may still go out, so it can be sent again
            -- as it was; one that may not makes the whole request unknown.
            -- Only the same provider knows the key: after a switch of ESP it is unknown.
            -- Providers keep idempotency keys for a day (Resend: 24 h): an older request could
            -- be delivered twice, so it is unknown.
            $idempotent and pending.provider = $provider
            and coalesce(handed.request_key, pending.batch_id) is not null
            -- From the key's first use (an earlier resend does not renew the provider's memory).
            and coalesce(
                least(handed.handed_over_at, pending.sending_at) > now() - interval '23 hours',
                true
            )
            -- Night or a moved schedule does not stop a resend: the request went out already,
            -- and it must go whole, as it was.
            and bool_and(
                fresh.send_id is not null
                and coalesce(
                    fresh.rule_exclusion_reason in ('quiet_hours', 'not_due', 'best_hour'), true
                )
                and $as_of <= pending.expires_at
            ) over (partition by coalesce(handed.request_key, pending.batch_id))
                as batch_resendable
        from nudge.send_ledger as pending
        left join {eligibility} as fresh
            on pending.send_id = fresh.send_id
        -- The dead push's sends still on the wire: handed over, and neither answered (those
        -- were settled just before) nor returned since (a batch refused whole, then split).
        -- `handovers` is the journal's rows, in the order they happened (`journal_order`).
        left join (
            select
                journal.run_id,
                journal.send_id,
                max(journal.request_key) filter (
                    where journal.event = 'handed_over' and journal.recency = 1
                ) as request_key,
                min(journal.recorded_at) filter (
                    where journal.event = 'handed_over'
                ) as handed_over_at
            from (
                select
                    events.*,
                    row_number() over (
                        partition by events.run_id, events.send_id
                        order by events.journal_order
                    ) as position,
                    -- 1 for the latest event of its kind (the last hand-over's key).
                    row_number() over (
                        partition by events.run_id, events.send_id, events.event
                        order by events.journal_order desc
                    ) as recency
                from handovers as events
                where events.trigger = $trigger
            ) as journal
            group by journal.run_id, journal.send_id
            having
                max(journal.position) filter (where journal.event = 'handed_over')
                > coalesce(
                    max(journal.position) filter (where journal.event != 'handed_over'), 0
                )
        ) as handed
            on pending.send_id = handed.send_id and pending.run_id = handed.run_id
        where
            pending.trigger = $trigger
            -- Not a later tick's: a run for an earlier instant (the hourly tick behind the
            -- 5-minute job, a re-executed old run) cannot judge them by its table, where their
            -- entry may not exist yet. They wait for a run at least as late as their own.
            and coalesce(pending.as_of, $as_of) <= $as_of
            -- This run's own rows too: at this point of the push it has planned nothing yet,
            -- so they are an earlier attempt's (a retried step), as unfinished as a dead run's.
            and (
                pending.status in ('planned', 'sending', 'deferred')
                or (
                    pending.status = 'failed_retryable'
                    and coalesce(pending.next_attempt_at, $as_of) <= $as_of
                )
            )
    ) as reviewed
) as resumed
where
    ledger.send_id = resumed.send_id
    -- Rows that wait (quiet hours, still deferred) keep their state and record no event.
    and resumed.next_status is not null
