-- The fingerprint each incremental model was last built in full with, by relation.
select
    relation,
    fingerprint
from nudge.incremental_models
