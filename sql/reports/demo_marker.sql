-- Mark a warehouse as made by `nudge demo`: the next demo may replace it, nothing else may.
create table nudge.nudge_demo as select now() as created_at
