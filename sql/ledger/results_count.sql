-- How many results a recovery found (ledger.resume).
select count(*) as results from results
