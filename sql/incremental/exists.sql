-- Whether a table exists. Parameters: $schema, $name.
select count(*) > 0
from information_schema.tables
where
    table_catalog = current_database()
    and table_schema = $schema
    and table_name = $name
