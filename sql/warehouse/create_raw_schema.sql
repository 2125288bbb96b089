-- The schema of the input contract's tables.
create schema if not exists raw
