-- What a compacted copy must keep of a database ($database): every schema, table, column,
-- constraint, index, view, sequence, macro and type, with their comments, one row each
-- (warehouse.compact compares the original's with the copy's).
select
    'schema' as kind,
    schema_name as object_name,
    coalesce(comment, '') as detail
from duckdb_schemas()
where database_name = $database
union all
select
    'table' as kind,
    schema_name || '.' || table_name as object_name,
    coalesce(comment, '') as detail
from duckdb_tables()
where database_name = $database
union all
select
    'column' as kind,
    schema_name || '.' || table_name || '.' || column_name as object_name,
    concat_ws(
        ' | ', data_type, is_nullable, coalesce(column_default, ''), coalesce(comment, '')
    ) as detail
from duckdb_columns()
where database_name = $database
union all
select
    'constraint' as kind,
    schema_name || '.' || table_name as object_name,
    constraint_type || ' ' || coalesce(constraint_text, '') as detail
from duckdb_constraints()
where database_name = $database
union all
select
    'index' as kind,
    schema_name || '.' || index_name as object_name,
    coalesce(sql, '') as detail
from duckdb_indexes()
where database_name = $database
union all
select
    'view' as kind,
    schema_name || '.' || view_name as object_name,
    coalesce(sql, '') || ' | ' || coalesce(comment, '') as detail
from duckdb_views()
where database_name = $database and not internal
union all
select
    'sequence' as kind,
    schema_name || '.' || sequence_name as object_name,
    coalesce(comment, '') as detail
from duckdb_sequences()
where database_name = $database
union all
select
    'macro' as kind,
    schema_name || '.' || function_name as object_name,
    coalesce(macro_definition, '') as detail
from duckdb_functions()
where database_name = $database and function_type in ('macro', 'table_macro')
union all
select
    'type' as kind,
    schema_name || '.' || type_name as object_name,
    coalesce(comment, '') as detail
from duckdb_types()
where database_name = $database and not internal
order by kind, object_name, detail
