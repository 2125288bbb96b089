-- A preview's rows not sent at its instant, by step and reason. {eligibility} is the preview
-- schema's eligibility relation.
select
    step,
    exclusion_reason,
    count(*) as candidates
from {eligibility}
where exclusion_reason is not null
group by step, exclusion_reason
order by step, exclusion_reason
