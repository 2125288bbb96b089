-- The journal a push of this trigger kept while it may have had requests on the wire, if any
-- (migration 008). Parameters: $trigger.
select journal
from nudge.open_journals
where trigger = $trigger
