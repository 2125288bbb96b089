-- The customers whose cap slots higher-priority triggers take this tick (plan_decide.sql):
-- filled by competing_sends.sql, once per competing eligibility relation.
create or replace temp table competing_sends (customer_id varchar)
