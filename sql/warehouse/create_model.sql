-- One dbt model, compiled by dbt, built at a replayed tick (replay.py). {kind} is table or view,
-- {relation} its quoted name, {code} the compiled select with the tick's as_of in it.
create or replace {kind} {relation} as (
    {code}
)
