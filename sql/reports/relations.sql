-- Every table and view of the warehouse, as (schema, name).
select
    schema_name,
    table_name as relation_name
from duckdb_tables()
union all
select
    schema_name,
    view_name as relation_name
from duckdb_views()
where not internal
