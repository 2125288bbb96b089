-- Where the last push kept its hand-over journal (migration 008), and how many sends are
-- unfinished: planned or sending, which only that journal can tell apart (handed over or not).
with

last_push as (

    select recorded.journal
    from nudge.journal_owner as recorded
    where recorded.owner_id = 1

),

unfinished as (

    select count(*) as sends
    from nudge.send_ledger
    where status in ('planned', 'sending')

),

final as (

    select
        last_push.journal,
        unfinished.sends
    from unfinished
    left join last_push on true

)

select * from final
