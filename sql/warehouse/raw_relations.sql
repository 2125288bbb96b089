-- The tables and views in schema raw (the input contract's tables, wherever they live).
select table_name as relation
from information_schema.tables
where
    table_catalog = current_database()
    and table_schema = 'raw'
