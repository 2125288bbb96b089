-- The newest event the tick's models see: the source freshness guard holds absence triggers
-- when it is too old. {events} is the staging view of events (as_of filtered).
select max(occurred_at) as newest_event from {events}
