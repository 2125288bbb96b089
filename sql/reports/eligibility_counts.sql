-- What an eligibility table holds: the as_of it was built for, its candidates and the rows
-- eligible now. {eligibility} is the trigger's eligibility relation.
select
    max(as_of) as built_for,
    count(*) as candidates,
    count(*) filter (where is_eligible) as eligible
from {eligibility}
