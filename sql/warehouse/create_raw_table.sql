-- One raw table of a backtest's scratch copy, with the columns and DuckDB types of the
-- warehouse's own (PostgreSQL's, mapped in postgres.py). {column_definitions} is "name type, ...".
create table raw.{table} ({column_definitions})
