-- Every relation of the database outside PostgreSQL's own schemas, as (schema, name)
-- (sql/reports/relations.sql), read from the catalog: unlike information_schema it lists what
-- nudge's user may not read and materialized views too, so `nudge demo` sees every table it
-- could drop before it decides whether the database is its own.
select
    namespaces.nspname as schema_name,
    classes.relname as relation_name
from pg_catalog.pg_class as classes
inner join pg_catalog.pg_namespace as namespaces
    on classes.relnamespace = namespaces.oid
where
    namespaces.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
    and namespaces.nspname not like 'pg\_temp\_%'
    and namespaces.nspname not like 'pg\_toast\_temp\_%'
