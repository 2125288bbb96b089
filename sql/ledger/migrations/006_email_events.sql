-- What the providers reported about nudge's sends (nudge serve's event webhooks): deliveries,
-- bounces, complaints, opens, clicks and unsubscribes, drained each tick from the landing
-- store. event_id is the store's dedupe key (the provider's own event id, else a hash of the
-- event): draining twice, or a provider delivering the same event twice, stores one row.
-- email is the recipient the provider named, so an event matching no send still suppresses its
-- address; payload is the provider's own JSON of the event, for audit (nudge erase scrubs both).
create table if not exists nudge.email_events (
    event_id varchar primary key,
    provider varchar not null,
    provider_event_id varchar,
    send_id varchar,
    email varchar,
    event_type varchar not null,
    bounce_type varchar,
    is_machine_open boolean not null,
    url varchar,
    occurred_at timestamptz not null,
    received_at timestamptz not null,
    payload varchar,
    drained_at timestamptz not null
);
