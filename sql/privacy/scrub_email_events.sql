-- Scrub the provider events of an erased person: events to their addresses or about their
-- sends keep what deliverability counts (provider, type, bounce type, instant, send_id, whose
-- ledger row is pseudonymised) and lose the address, the clicked URL (it may carry personal
-- query parameters) and the provider's payload (it names the recipient).
-- Parameters: $emails, $send_ids, $address_pattern.
update nudge.email_events
set
    email = null,
    url = null,
    payload = null
where
    (email is not null or url is not null or payload is not null)
    and (
        email in (select unnest(cast($emails as varchar[])))
        or send_id in (select unnest(cast($send_ids as varchar[])))
        or coalesce(payload, '') ~* $address_pattern
    )
