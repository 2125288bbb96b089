-- How many sends the ledger holds.
select count(*) as sends from nudge.send_ledger
