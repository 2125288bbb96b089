-- The code each incremental dbt model was last built in full with (dagster_project/incremental.py):
-- a fingerprint of its SQL, its upstream models' SQL, the project's macros and vars. A model whose
-- fingerprint changed is dropped before the next dbt build, which then builds it in full, so rows
-- kept from earlier ticks never carry an older release's logic.
create table if not exists nudge.incremental_models (
    relation varchar primary key,
    fingerprint varchar not null,
    recorded_at timestamptz not null
);
