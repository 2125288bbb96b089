-- Record that a migration of sql/ledger/migrations/ was applied. Parameters: $version.
insert into nudge.migrations (version, applied_at) values ($version, now())
