-- The customers whose cap slots higher-priority triggers take this tick (plan_decide.sql):
-- filled by competing_sends.sql, once per competing eligibility relation. (ledger.py drops
-- the one of an earlier planning first: PostgreSQL has no `create or replace table`.)
create temp table competing_sends (customer_id varchar)
