-- What the hand-over journal knows about sends that earlier runs of this trigger left
-- unsettled: the provider's answer, where it arrived after the send's last hand-over. The
-- result, as a temp table `results` in the shape settle.sql reads, settles them as the dead run
-- would have (nothing in doubt about a send whose answer was read).
-- Parameters: $trigger. Called before the resuming run plans anything, so every unsettled row is
-- an earlier run's or an earlier attempt's (a retried step keeps its run id).
create or replace temp table results as

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

    select handovers.*
    from nudge.handovers as handovers
    inner join pending
        on
            handovers.send_id = pending.send_id
            and handovers.run_id = pending.run_id

),

last_handover as (

    select
        send_id,
        seq,
        request_key
    from journal
    where event = 'handed_over'
    qualify row_number() over (partition by send_id order by seq desc) = 1

),

last_answer as (

    select *
    from journal
    where event = 'answered'
    qualify row_number() over (partition by send_id order by seq desc) = 1

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
        last_answer.as_of as sent_as_of
    from last_answer
    left join last_handover
        on last_answer.send_id = last_handover.send_id
    where last_answer.seq > coalesce(last_handover.seq, 0)

)

select * from final
