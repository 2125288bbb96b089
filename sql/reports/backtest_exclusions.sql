-- Steps of one trigger that fell due in the hour before a replayed tick and that the rules
-- kept out (outcomes planning records, holdouts and unmet conditions, are in the ledger).
-- Parameters: $previous, $tick. {eligibility} is the trigger's eligibility relation.
select
    step,
    rule_exclusion_reason,
    count(*) as steps
from {eligibility}
where
    due_at > $previous
    and due_at <= $tick
    and ledger_status is null
    and rule_exclusion_reason is not null
    and rule_exclusion_reason not in ('holdout', 'control_group', 'condition_not_met')
group by step, rule_exclusion_reason
