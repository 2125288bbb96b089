-- Mark a warehouse as made by `nudge demo`: the next demo may replace it, nothing else may.
-- Written first, before the data, so a demo that dies half way can still be replaced.
create schema if not exists nudge;
create table if not exists nudge.nudge_demo as select now() as created_at
