-- How many of this tick's due steps the frequency cap deferred (new and still deferred).
select count(*) from plan_decisions
where decided_status = 'deferred'
