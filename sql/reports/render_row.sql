-- One customer's row for one step in a preview's eligibility table (nudge render): the
-- eligible one if any, else the latest. Parameters: $customer, $step. {eligibility} is the
-- preview relation.
select
    send_id,
    exclusion_reason,
    due_at,
    cast(to_json(eligibility) as varchar) as context
-- to_json reads the whole row by its alias.
from {eligibility} as eligibility  -- noqa: AL05
where customer_id = $customer and step = $step
order by is_eligible desc, due_at desc nulls last
limit 1
