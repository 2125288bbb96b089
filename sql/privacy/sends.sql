-- Every ledger row of one customer, newest first. Parameters: $customer_id.
select * from nudge.send_ledger  -- noqa: AM04
where customer_id = $customer_id
order by coalesce(settled_at, sending_at, planned_at) desc, trigger asc, step_index asc
