-- A schema a replayed model is built into. {schema} is its quoted name.
create schema if not exists {schema}
