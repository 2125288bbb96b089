-- What a backtest's scratch ledger holds, per day (of the tick that sent, else planned),
-- trigger, step and outcome (status, with the reason for skipped and deferred sends).
select
    cast(cast(coalesce(sent_as_of, as_of) as date) as varchar) as sent_day,
    trigger,
    step,
    case
        when status in ('skipped', 'deferred') and reason is not null
            then status || ':' || reason
        else status
    end as outcome,
    count(*) as sends
from nudge.send_ledger
group by all
