-- The tables and views of $schemas in this warehouse, with the person columns each has (nudge
-- erase, export and why). Parameters: $schemas.
with

relations as (

    select
        table_schema,
        table_name,
        table_type
    from information_schema.tables
    where
        table_catalog = current_database()
        and table_schema in (select unnest(cast($schemas as varchar[])))

),

person_columns as (

    select
        table_schema,
        table_name,
        bool_or(column_name = 'customer_id') as has_customer_id,
        bool_or(column_name = 'email') as has_email,
        bool_or(column_name = 'first_name') as has_first_name
    from information_schema.columns
    where
        table_catalog = current_database()
        and table_schema in (select unnest(cast($schemas as varchar[])))
    group by table_schema, table_name

),

final as (

    select
        relations.table_schema,
        relations.table_name,
        relations.table_type = 'BASE TABLE' as is_table,
        coalesce(person_columns.has_customer_id, false) as has_customer_id,
        coalesce(person_columns.has_email, false) as has_email,
        coalesce(person_columns.has_first_name, false) as has_first_name
    from relations
    left join person_columns
        on
            relations.table_schema = person_columns.table_schema
            and relations.table_name = person_columns.table_name

)

select * from final
order by table_schema, table_name
