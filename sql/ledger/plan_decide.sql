-- Decide what this tick does with every due step of one trigger, before anything is written:
-- 'planned' (send now), 'deferred' or 'skipped' (the customer's frequency cap is full),
-- 'holdout' (held out to measure lift), 'skipped' (the step's condition is false, or a later
-- step of the entry was already reached: 'superseded', since a sequence only moves forward).
-- Run inside the planning transaction into a temp table; plan.sql (new sends) and
-- plan_deferred.sql (sends an earlier tick deferred) apply it.
--
-- Frequency caps count, per customer and across all triggers, the marketing sends the ledger
-- says went out (or may have: sending, unknown) in the last 24 h and 7 days of tick time, plus
-- sends of higher-priority triggers due at this same tick that have not gone out yet (their
-- eligibility tables were all built before any send step runs), so which trigger wins a slot
-- never depends on the order Dagster runs the send steps in.
-- Parameters: $as_of, $cap_day, $cap_week, $cap_policy.
-- {eligibility}: this trigger's eligibility relation. The temp table competing_sends holds one
-- customer_id row per due send of a higher-priority marketing trigger (competing_sends.sql).
create temp table plan_decisions as

with

-- idle.sql loosens this filter to tell a step with nothing to do: change them together.
candidates as (

    select eligibility.*
    from {eligibility} as eligibility
    where
        -- The table was built before this tick's sends: a rerun must not see them again.
        eligibility.send_id not in (
            select ledger.send_id from nudge.send_ledger as ledger
            where ledger.status != 'deferred'
        )
        and $as_of <= eligibility.expires_at
        and (
            (
                eligibility.due_at <= $as_of
                and (
                    -- New sends, and sends deferred by an earlier tick's cap.
                    eligibility.exclusion_reason is null
                    -- Outcomes that settle a step without sending it, recorded once.
                    or (
                        eligibility.ledger_status is null
                        and eligibility.rule_exclusion_reason in (
                            'holdout', 'control_group', 'condition_not_met'
                        )
                    )
                )
            )
            -- Steps a later step of their entry overtook: recorded once, due or not, so the
            -- entry's history says why they never went out.
            or (
                eligibility.ledger_status is null
                and eligibility.rule_exclusion_reason = 'superseded'
            )
        )

),

-- Each step's place in the sequence as the trigger's YAML says now (the ledger's step_index is
-- the place when the row was written; a reordered YAML makes it stale).
step_positions as (

    select distinct
        eligibility.step,
        eligibility.step_index
    from {eligibility} as eligibility

),

-- The furthest step each entry has reached, read from the ledger now rather than from the
-- table's build: the engine's 'superseded' rule, re-checked at the moment of planning.
reached as (

    select
        ledger.trigger_key,
        max(coalesce(step_positions.step_index, ledger.step_index)) as reached_step_index
    from nudge.send_ledger as ledger
    left join step_positions
        on ledger.step = step_positions.step
    where
        ledger.trigger in (select candidates.trigger from candidates)
        and ledger.trigger_key in (select candidates.trigger_key from candidates)
        and ledger.status in (
            'planned', 'sending', 'sent', 'unknown', 'failed_retryable', 'failed_permanent',
            'skipped', 'holdout'
        )
    group by ledger.trigger_key

),

reviewed as (

    select
        candidates.*,
        coalesce(
            candidates.rule_exclusion_reason = 'superseded'
            or reached.reached_step_index > candidates.step_index,
            false
        ) as is_superseded
    from candidates
    left join reached
        on candidates.trigger_key = reached.trigger_key

),

due as (

    select
        *,
        exclusion_reason is null and not is_superseded as wants_slot
    from reviewed

),

-- A send that failed and waits for its retry holds its slot: the retry is resumed without a
-- cap check, so another trigger must not take the slot meanwhile.
counted as (

    select
        customer_id,
        case when status = 'planned' then $as_of else coalesce(sent_as_of, as_of) end as counted_at
    from nudge.send_ledger
    where
        category = 'marketing'
        and status in ('planned', 'sending', 'sent', 'unknown', 'failed_retryable')
        and customer_id in (select due.customer_id from due)

),

-- Both directions: a tick re-run (or finishing) after a later one must see that one's sends.
recent as (

    select
        customer_id,
        count(*) filter (
            where
            counted_at > $as_of - interval '24 hours'
            and counted_at < $as_of + interval '24 hours'
        ) as sent_day,
        count(*) filter (
            where
            counted_at > $as_of - interval '7 days'
            and counted_at < $as_of + interval '7 days'
        ) as sent_week
    from counted
    group by customer_id

),

competing as (

    select
        competitors.customer_id,
        count(*) as competing
    from competing_sends as competitors
    where competitors.customer_id in (select due.customer_id from due)
    group by competitors.customer_id

),

ranked as (

    select
        due.*,
        coalesce(recent.sent_day, 0) + coalesce(competing.competing, 0) as used_day,
        coalesce(recent.sent_week, 0) + coalesce(competing.competing, 0) as used_week,
        -- Several sends of this trigger due for one customer at once (two carts): earliest first.
        case
            when due.wants_slot
                then row_number() over (
                        partition by due.customer_id, due.wants_slot
                        order by due.due_at, due.send_id
                    )
        end as slot_rank
    from due
    left join recent
        on due.customer_id = recent.customer_id
    left join competing
        on due.customer_id = competing.customer_id

),

final as (

    select
        *,
        case
            when is_superseded then 'skipped'
            when rule_exclusion_reason in ('holdout', 'control_group') then 'holdout'
            when rule_exclusion_reason = 'condition_not_met' then 'skipped'
            when
                category = 'marketing'
                and slot_rank > least($cap_day - used_day, $cap_week - used_week)
                then case when $cap_policy = 'skip' then 'skipped' else 'deferred' end
            else 'planned'
        end as decided_status,
        case
            when is_superseded then 'superseded'
            when rule_exclusion_reason in ('holdout', 'control_group', 'condition_not_met')
                then rule_exclusion_reason
            when category = 'marketing' and slot_rank > $cap_day - used_day
                then 'frequency_cap_24h'
            when category = 'marketing' and slot_rank > $cap_week - used_week
                then 'frequency_cap_7d'
        end as decided_reason
    from ranked

)

select * from final  -- noqa: AM04
