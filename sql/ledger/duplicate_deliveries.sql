-- send_ids the history shows as settled 'sent' more than once: must always be 0 (the
-- no_duplicate_deliveries asset check). Parameters: $trigger.
with

sent_twice as (

    select send_id
    from nudge.send_events
    where trigger = $trigger and status = 'sent'
    group by send_id
    having count(*) > 1

)

select count(*) as send_ids from sent_twice
