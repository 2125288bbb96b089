-- The catalog name of this connection's database (DuckDB names it after the file).
select current_database() as database_name
