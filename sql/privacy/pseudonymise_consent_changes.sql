-- An erased customer's own consent changes keep their dates and sources under the pseudonym
-- (proof of consent needs no identity). Parameters: $customer_id, $pseudonym.
update nudge.consent_changes
set customer_id = $pseudonym
where customer_id = $customer_id
