-- Emails the providers accepted per UTC day and trigger in [$date_from, $date_to], summed
-- over steps and variants (holdouts are not sends): the report's stacked daily chart.
select
    sent_on,
    trigger,
    cast(sum(sent) as bigint) as sent,
    cast(sum(delivered) as bigint) as delivered,
    cast(sum(bounced) as bigint) as bounced,
    cast(sum(unsubscribed) as bigint) as unsubscribed,
    cast(sum(complained) as bigint) as complained
from reporting.rpt_trigger_daily
where sent_on between $date_from and $date_to
group by sent_on, trigger
order by sent_on, trigger
