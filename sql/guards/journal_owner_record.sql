-- This push keeps its hand-over journal here (guards.check_journal_owner). Parameters: $journal.
insert into nudge.journal_owner (owner_id, journal, recorded_at)
values (1, $journal, now())
on conflict (owner_id) do update set
    journal = excluded.journal,
    recorded_at = excluded.recorded_at
