-- Drop a temp table an earlier statement of this connection made (sql/ledger/drop_temp.sql).
-- {table} is the temp table's name.
drop table if exists pg_temp.{table}
