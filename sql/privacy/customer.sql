-- One customer's row in {relation} (staging.stg_raw__customers), for nudge export and why.
-- Parameters: $customer_id.
select * from {relation}  -- noqa: AM04
where customer_id = $customer_id
