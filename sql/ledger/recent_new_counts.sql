-- New sends planned by a trigger's last completed ticks before an instant: the mass-send
-- guard's baseline. Parameters: $trigger, $before, $ticks.
select new
from nudge.runs
where
    trigger = $trigger
    and as_of < $before
    and outcome in ('ok', 'failed')
    and new is not null
order by as_of desc
limit $ticks
