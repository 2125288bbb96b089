-- The reporting schema and its tables and views, for `nudge report`: one row for the schema
-- itself (relation_name null), so an empty schema still answers, then one per relation. Only
-- the warehouse's own catalog: an attached DuckDB database may have a reporting schema of its
-- own. information_schema, so the one statement serves DuckDB and PostgreSQL.
select
    schema_name,
    null as relation_name
from information_schema.schemata
where catalog_name = current_database() and schema_name = 'reporting'
union all
select
    table_schema as schema_name,
    table_name as relation_name
from information_schema.tables
where table_catalog = current_database() and table_schema = 'reporting'
