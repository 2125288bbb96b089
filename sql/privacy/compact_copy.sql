-- Copy every schema, table (with its constraints), view, sequence, macro, type, index and
-- comment of the warehouse ({source}, its quoted catalog name) into the compaction's file.
copy from database {source} to nudge_compacted
