-- Every list nudge's own consent changes name: the lists to read the landing store for.
select distinct lower(trim(list)) as list
from nudge.consent_changes
order by list
