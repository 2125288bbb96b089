-- The tables and views in schema raw (the input contract's tables, wherever they live).
select table_name as relation from duckdb_tables()
where schema_name = 'raw'
union all
select view_name as relation from duckdb_views()
where schema_name = 'raw'
