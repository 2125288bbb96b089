-- The generator's staged events at the given positions (0 = the first row it wrote), to copy
-- into planted bad rows. Committed appends to a new table number their rows 0, 1, 2... in the
-- order they were written (events_written.sql checks the range); the generator also checks
-- each row it gets back against what it wrote there.
with

events as (
    select
        rowid as position,
        event_id,
        customer_id,
        event_name,
        occurred_at,
        properties
    from raw.__nudge_demo_events
),

wanted as (
    select position from __nudge_demo_wanted
),

final as (
    select
        events.position,
        events.event_id,
        events.customer_id,
        events.event_name,
        epoch_us(events.occurred_at) as occurred_at_us,
        events.properties
    from events
    inner join wanted on events.position = wanted.position
)

select * from final
