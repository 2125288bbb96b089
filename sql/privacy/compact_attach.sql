-- The empty file a compaction copies the warehouse into (warehouse.compact). {path} is a
-- quoted literal (attach takes no parameters).
attach {path} as nudge_compacted
