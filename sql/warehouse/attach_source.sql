-- The live warehouse, read-only, as the source of a backtest's copy. {path} is a quoted literal
-- (attach takes no parameters).
attach {path} as source (read_only)
