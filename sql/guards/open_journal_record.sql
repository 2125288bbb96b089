-- This push's journal is about to hold requests on the wire. Parameters: $trigger, $journal.
insert into nudge.open_journals (trigger, journal, opened_at)
values ($trigger, $journal, now())
on conflict (trigger) do update set
    journal = excluded.journal,
    opened_at = excluded.opened_at
