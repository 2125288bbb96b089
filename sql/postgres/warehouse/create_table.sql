-- A table for a copy of a DuckDB file's table (warehouse.copy_into_postgres). {relation} is
-- its quoted name, {column_definitions} "name type, ..." (postgres.postgres_type).
create table {relation} ({column_definitions})
