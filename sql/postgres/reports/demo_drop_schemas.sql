-- Drop what an earlier `nudge demo` made in a database before the next one loads its own: its
-- raw tables, nudge's schema, and the models dbt built from them. Only a database the demo
-- made, or one holding nobody's data, gets here (demo._refuse_unless_replaceable).
-- {schemas} are the quoted names.
drop schema if exists {schemas} cascade
