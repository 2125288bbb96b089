-- Fill one table from the CSV file DuckDB wrote (warehouse/export_csv.sql), streamed from the
-- client. {relation} is the quoted table, {column_list} its quoted columns in the file's order.
copy {relation} ({column_list}) from stdin with (format csv)
