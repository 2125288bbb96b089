-- The migrations of sql/ledger/migrations/ this warehouse has applied.
select version from nudge.migrations
