-- The relations in schema raw (sql/warehouse/raw_relations.sql), read from the catalog:
-- information_schema.tables leaves out materialized views, which a shop on PostgreSQL often
-- puts in front of what its loader writes, and dbt reads as sources all the same.
select relations.relname as relation
from pg_catalog.pg_class as relations
inner join pg_catalog.pg_namespace as namespaces
    on relations.relnamespace = namespaces.oid
where
    namespaces.nspname = 'raw'
    -- Tables, partitioned tables, views, materialized views and foreign tables.
    and relations.relkind in ('r', 'p', 'v', 'm', 'f')
    -- As information_schema does: only what nudge's user may read.
    and has_any_column_privilege(relations.oid, 'select')
