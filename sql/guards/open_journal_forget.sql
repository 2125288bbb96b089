-- Nothing of this trigger is on the wire any more: its journal closed with every batch
-- settled, a later push settled a dead one's, or an operator declared it lost.
-- Parameters: $trigger.
delete from nudge.open_journals
where trigger = $trigger
