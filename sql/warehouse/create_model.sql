-- One dbt model, compiled by dbt, built at a replayed tick (replay.py): kind is table or view,
-- relation its quoted name, code the compiled select with the tick's as_of in it. (No braces
-- here: str.format would paste the whole model into this comment.)
create or replace {kind} {relation} as (
    {code}
)
