-- Write the WAL into the database file (and empty it).
checkpoint
