-- The tables and views of $schemas (sql/privacy/relations.sql), read from the catalog:
-- information_schema leaves out materialized views, and a person's rows in one (a shop's
-- raw.customers in front of what its loader writes) must not go unreported by nudge erase
-- and export. Parameters: $schemas.
with

relations as (

    select
        classes.oid,
        namespaces.nspname as table_schema,
        classes.relname as table_name,
        -- Only tables take deletes (a materialized view keeps its rows until it is refreshed).
        classes.relkind in ('r', 'p') as is_table
    from pg_catalog.pg_class as classes
    inner join pg_catalog.pg_namespace as namespaces
        on classes.relnamespace = namespaces.oid
    where
        namespaces.nspname in (select unnest(cast($schemas as varchar[])))
        -- Tables, partitioned tables, views, materialized views and foreign tables.
        and classes.relkind in ('r', 'p', 'v', 'm', 'f')
        -- A partition's rows are its parent's: counted once, there.
        and not classes.relispartition
        -- Reading a materialized view never refreshed is an error.
        and (classes.relkind != 'm' or classes.relispopulated)
        -- As information_schema does: only what nudge's user may read.
        and has_any_column_privilege(classes.oid, 'select')

),

person_columns as (

    select
        attrelid as oid,
        bool_or(attname = 'customer_id') as has_customer_id,
        bool_or(attname = 'email') as has_email,
        bool_or(attname = 'first_name') as has_first_name
    from pg_catalog.pg_attribute
    where
        attnum > 0
        and not attisdropped
        and attrelid in (select relations.oid from relations)
    group by attrelid

),

final as (

    select
        relations.table_schema,
        relations.table_name,
        relations.is_table,
        coalesce(person_columns.has_customer_id, false) as has_customer_id,
        coalesce(person_columns.has_email, false) as has_email,
        coalesce(person_columns.has_first_name, false) as has_first_name
    from relations
    left join person_columns
        on relations.oid = person_columns.oid

)

select * from final
order by table_schema, table_name
