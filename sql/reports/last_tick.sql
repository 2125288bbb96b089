-- The instant of the latest tick that ran (nudge run, the schedule, the demo): what the
-- reporting models are built as of when `nudge report` refreshes them.
select max(as_of) as as_of
from nudge.runs
