-- Fill one raw table of a backtest's scratch copy from the CSV file PostgreSQL wrote
-- (postgres/warehouse/copy_raw_out.sql). PostgreSQL's CSV, exactly: no sniffing (a guess at
-- the dialect can fail on a quoted newline), an unquoted empty field is null and a quoted
-- one ("") an empty string; rows end in \n only (DuckDB would guess \r from a value holding
-- one), and a row may be long (a big properties document). {path} is a quoted literal.
-- (sqlfluff's DuckDB grammar knows only some of COPY's options, hence the noqa.)
copy raw.{table} from {path} (  -- noqa: PRS
    format csv,
    auto_detect false,
    header false,
    delim ',',
    quote '"',
    escape '"',
    new_line '\n',
    max_line_size 1073741824,
    allow_quoted_nulls false
)
