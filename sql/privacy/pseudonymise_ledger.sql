-- Pseudonymise one erased customer's ledger rows: the id becomes the pseudonym (in the keys
-- too), the address and the rendering context go, and the error text loses the address, the
-- name ($pattern, case-insensitive) and the id. send_id stays: an md5 of trigger, key and step
-- that keeps the step from ever being sent again. Parameters: $customer_id, $pseudonym, $pattern.
update nudge.send_ledger
set
    customer_id = $pseudonym,
    email = null,
    context = null,
    trigger_key = replace(trigger_key, $customer_id, $pseudonym),
    reentry_key = replace(reentry_key, $customer_id, $pseudonym),
    error = replace(
        regexp_replace(error, $pattern, '[erased]', 'gi'), $customer_id, $pseudonym
    ),
    updated_at = now()
where customer_id = $customer_id
