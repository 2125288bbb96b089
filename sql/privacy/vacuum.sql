-- After an erasure on PostgreSQL: free the old versions of the rows it changed (erase.py).
-- {relation} is a table the erasure changed. DuckDB compacts the whole file instead.
vacuum {relation}
