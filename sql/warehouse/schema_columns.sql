-- The tables of one schema of a DuckDB file with their columns, in order, for a copy into
-- PostgreSQL (warehouse.copy_into_postgres). Parameter: $schema_name.
with

schema_tables as (

    select table_name
    from information_schema.tables
    where table_schema = $schema_name and table_type = 'BASE TABLE'

),

schema_columns as (

    select
        table_name,
        column_name,
        data_type,
        ordinal_position
    from information_schema.columns
    where table_schema = $schema_name

),

final as (

    select
        schema_columns.table_name,
        schema_columns.column_name,
        schema_columns.data_type,
        schema_columns.ordinal_position
    from schema_columns
    inner join schema_tables
        on schema_columns.table_name = schema_tables.table_name

)

select
    table_name,
    column_name,
    data_type
from final
order by table_name, ordinal_position
