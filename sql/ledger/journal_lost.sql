-- An operator declares a trigger's hand-over journal lost for good (`nudge resolve-unknown
-- --journal-lost`): its unfinished sends may have been delivered by the push that died, so
-- they become 'unknown', for the operator to resend or drop. Parameters: $trigger.
update nudge.send_ledger as ledger
set
    status = 'unknown',
    reason = 'journal_lost',
    error = 'the hand-over journal of the push that left it unfinished was lost',
    settled_at = now(),
    updated_at = now()
where
    ledger.trigger = $trigger
    and ledger.status in ('planned', 'sending')
