-- The first planned sends of a preview, with the row they render from. Parameters: $n.
select
    send_id,
    cast(to_json(plan_decisions) as varchar) as context
from plan_decisions
where decided_status = 'planned'
order by due_at, send_id
limit $n
