-- One table of a DuckDB file as a CSV file PostgreSQL's COPY reads as it is
-- (postgres/warehouse/copy_in.sql): no header, every value quoted and a null an unquoted empty
-- field, so an empty string stays one and a value `\.` is not read as the end of the data.
-- {relation} is the quoted table, {path} a quoted literal.
copy (select * from {relation}) to {path} (  -- noqa: PRS, AM04
    header false,
    quote '"',
    escape '"',
    force_quote *
)
