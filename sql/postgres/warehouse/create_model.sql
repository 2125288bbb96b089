-- One dbt model, compiled by dbt for PostgreSQL, built at a replayed tick (replay.py): kind is
-- table or view, relation its quoted name, code the compiled select with the tick's as_of in
-- it. PostgreSQL has no `create or replace table`: drop, then create, in one transaction.
-- Cascade drops the views built on it, which the replay builds again after it (models go in
-- dependency order). The search path is the profile's (dbt/profiles.yml), for this
-- transaction only: unqualified helper functions such as len() resolve in schema main. (No
-- braces here: str.format would paste the whole model into this comment.)
begin;
set local search_path = main, public;
drop {kind} if exists {relation} cascade;
create {kind} {relation} as (
    {code}
);
commit
