-- One raw relation's rows as CSV on the client's side (a backtest's copy, backtest.py),
-- streamed: the server sends rows as it reads them, nothing is held whole. {column_list} are
-- the columns raw_columns.sql found, quoted (instants as text, backtest._copied_column);
-- {table} is one of the input contract's tables.
copy (select {column_list} from raw.{table}) to stdout with (format csv)
