-- Consent you can prove (nudge serve, nudge erase): nudge's own consent changes, the audit
-- trail and the erased addresses. nudge still never writes to the user's raw schema: staging
-- merges nudge.consent_changes with raw.subscriptions.

-- Every consent change nudge itself recorded, drained from the service's landing store (or
-- written by an operator command). change_id is the landing store's id: draining twice
-- inserts nothing twice.
create table if not exists nudge.consent_changes (
    change_id varchar primary key,
    customer_id varchar not null,
    list varchar not null,
    status varchar not null,
    changed_at timestamptz not null,
    source varchar not null,
    send_id varchar,
    drained_at timestamptz not null
);

-- Append-only: who did what, when. actor is `service`, `schedule`, `cli:<user>` or
-- `run:<run id>`; subject the customer (pseudonymised on erasure) or the trigger.
create table if not exists nudge.audit_log (
    audit_id varchar primary key,
    occurred_at timestamptz not null,
    action varchar not null,
    actor varchar not null,
    subject varchar,
    detail varchar
);

-- Addresses erased under GDPR Article 17, as salted SHA-256 hashes only: the address is
-- suppressed for good, even when the shop imports it again, without nudge keeping it.
create table if not exists nudge.erasures (
    email_hash varchar primary key,
    erased_at timestamptz not null,
    audit_id varchar not null
);

-- The warehouse's own salt for those hashes, made once.
create table if not exists nudge.erasure_salt (
    salt varchar not null
);

insert into nudge.erasure_salt (salt)
select cast(gen_random_uuid() as varchar) || cast(gen_random_uuid() as varchar)
where not exists (select 1 from nudge.erasure_salt);
