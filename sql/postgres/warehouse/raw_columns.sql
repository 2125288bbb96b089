-- The columns of one relation in schema raw, in order, with their PostgreSQL types: what a
-- backtest creates in its scratch DuckDB file before copying the rows (backtest.py). Read
-- from the catalog, as raw_relations.sql, so a materialized view's columns are found too.
-- A domain's column has its base type; a column nudge's user may not read is left out (the
-- input contract counts a relation with column grants as readable). Parameters: $table_name.
select
    attributes.attname as column_name,
    case
        when column_types.typtype = 'd'
            then format_type(column_types.typbasetype, column_types.typtypmod)
        else format_type(attributes.atttypid, attributes.atttypmod)
    end as data_type
from pg_catalog.pg_attribute as attributes
inner join pg_catalog.pg_class as relations
    on attributes.attrelid = relations.oid
inner join pg_catalog.pg_namespace as namespaces
    on relations.relnamespace = namespaces.oid
inner join pg_catalog.pg_type as column_types
    on attributes.atttypid = column_types.oid
where
    namespaces.nspname = 'raw'
    and relations.relname = $table_name
    and attributes.attnum > 0
    and not attributes.attisdropped
    and has_column_privilege(relations.oid, attributes.attnum, 'select')
order by attributes.attnum
