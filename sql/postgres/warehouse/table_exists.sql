-- Whether a table is there. Parameter: $qualified_name, the table's quoted schema.name.
select to_regclass($qualified_name) is not null as found
