-- Every table of a database ($database), for a compaction's row counts.
select
    schema_name,
    table_name
from duckdb_tables()
where database_name = $database
order by schema_name, table_name
