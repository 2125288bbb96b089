-- The rows of one table ({relation}, catalog-qualified): a compacted copy must have as many.
select count(*) as row_count from {relation}
