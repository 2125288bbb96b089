-- After resume.sql took over a trigger's sends of earlier runs, the journal's rows about those
-- runs have served their purpose: the ledger now says what became of each send.
-- Parameters: $trigger. (The resuming run has journaled nothing yet.)
delete from nudge.handovers
where trigger = $trigger
