-- A batch's journal rows, once the batch settled in the ledger (same transaction): the table
-- only ever holds what is being pushed, or what a crashed run left. `results` is the batch.
delete from nudge.handovers
where exists (
        select 1 from results
        where results.run_id = handovers.run_id and results.send_id = handovers.send_id
    )
