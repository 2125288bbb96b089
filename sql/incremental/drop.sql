-- Drop an incremental model so the next dbt build builds it in full. {relation} is quoted.
drop table if exists {relation}
