-- Copy one raw table of an attached warehouse (`source`) into this one (backtest scratch).
-- {table} is one of the input contract's tables.
create table raw.{table} as select * from source.raw.{table}  -- noqa: AM04
