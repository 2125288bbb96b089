-- The columns of one relation in schema raw, in order, with their PostgreSQL types: what a
-- backtest creates in its scratch DuckDB file before copying the rows (backtest.py). Read
-- from the catalog, as raw_relations.sql, so a materialized view's columns are found too.
-- Parameters: $table_name.
select
    attributes.attname as column_name,
    format_type(attributes.atttypid, attributes.atttypmod) as data_type
from pg_catalog.pg_attribute as attributes
inner join pg_catalog.pg_class as relations
    on attributes.attrelid = relations.oid
inner join pg_catalog.pg_namespace as namespaces
    on relations.relnamespace = namespaces.oid
where
    namespaces.nspname = 'raw'
    and relations.relname = $table_name
    and attributes.attnum > 0
    and not attributes.attisdropped
order by attributes.attnum
