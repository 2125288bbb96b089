-- The reporting schema and its tables and views, for `nudge report`: one row for the schema
-- itself (relation_name null), so an empty schema still answers, then one per relation. Only
-- the warehouse's own catalog: an attached database may have a reporting schema of its own.
select
    schema_name,
    null as relation_name
from duckdb_schemas()
where database_name = current_database() and schema_name = 'reporting'
union all
select
    schema_name,
    table_name as relation_name
from duckdb_tables()
where database_name = current_database() and schema_name = 'reporting'
union all
select
    schema_name,
    view_name as relation_name
from duckdb_views()
where database_name = current_database() and schema_name = 'reporting' and not internal
