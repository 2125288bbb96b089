-- What the hand-over journal says about sends that earlier runs of this trigger (or an earlier
-- attempt of this run) left unsettled: the provider's answer, where it came after the send's
-- last hand-over. The result, as a temp table `results` in the shape settle.sql reads, settles
-- them as the dead push would have (nothing is in doubt about a send whose answer was read).
-- `handovers` is the journal's rows (dagster_project/handover.py::read), in the order they
-- happened (`journal_order`). Parameters: $trigger.
create temp table results as

with

pending as (

    select
        send_id,
        run_id
    from nudge.send_ledger
    where
        trigger = $trigger
        and status in ('planned', 'sending')

),

journal as (

    select
        handovers.*,
        row_number() over (
            partition by handovers.send_id
            order by handovers.journal_order
        ) as position
    from handovers
    inner join pending
        on
            handovers.send_id = pending.send_id
            and handovers.run_id = pending.run_id

),

-- Each send's events of one kind, latest first.
ranked as (

    select
        *,
        row_number() over (partition by send_id, event order by position desc) as recency
    from journal

),

last_handover as (

    select
        send_id,
        position,
        request_key
    from ranked
    where event = 'handed_over' and recency = 1

),

first_handover as (

    select
        send_id,
        min(recorded_at) as handed_over_at
    from journal
    where event = 'handed_over'
    group by send_id

),

last_answer as (

    select *
    from ranked
    where event = 'answered' and recency = 1

),

final as (

    select
        last_answer.run_id,
        last_answer.send_id,
        last_answer.status,
        cast(null as varchar) as reason,
        last_answer.provider_message_id,
        last_answer.error,
        last_answer.attempts,
        last_answer.retryable,
        last_handover.request_key as batch_id,
        last_answer.as_of as sent_as_of,
        first_handover.handed_over_at
    from last_answer
    left join last_handover
        on last_answer.send_id = last_handover.send_id
    left join first_handover
        on last_answer.send_id = first_handover.send_id
    where last_answer.position > coalesce(last_handover.position, 0)

)

select * from final
