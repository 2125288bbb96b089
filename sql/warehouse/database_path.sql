-- The file of the database this connection uses (null in memory): the hand-over journal lives
-- beside it.
select path from duckdb_databases()
where database_name = current_database()
