-- What planning decided in a preview (plan_decisions, rolled back afterwards), by step and
-- variant.
select
    step,
    variant,
    decided_status,
    decided_reason,
    count(*) as sends
from plan_decisions
group by step, variant, decided_status, decided_reason
order by step, variant, decided_status, decided_reason
