-- How many rows one table holds. {relation} is its quoted name.
select count(*) as row_count from {relation}
