-- The rows of an eligibility table not sent now, by reason. {eligibility} is the relation.
select
    exclusion_reason,
    count(*) as candidates
from {eligibility}
where exclusion_reason is not null
group by exclusion_reason
order by exclusion_reason
