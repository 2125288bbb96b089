-- One customer's rows in a trigger's eligibility table ({relation}), whatever columns this
-- version of the models has. Parameters: $customer_id.
select * from {relation}  -- noqa: AM04
where customer_id = $customer_id
order by due_at desc nulls last, step_index desc nulls last
