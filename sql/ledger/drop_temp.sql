-- Drop a temp table an earlier statement of this connection made (PostgreSQL has no
-- `create or replace table`, so the planning's temp tables are dropped, then created).
-- {table} is the temp table's name.
drop table if exists temp.{table}
