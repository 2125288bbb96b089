-- Emails the providers accepted per UTC day and trigger in [$date_from, $date_to], summed
-- over steps and variants (holdouts are not sends): the report's stacked daily chart.
select
    sent_on,
    trigger,
    sum(sent) as sent,
    sum(delivered) as delivered,
    sum(bounced) as bounced,
    sum(unsubscribed) as unsubscribed,
    sum(complained) as complained
from reporting.rpt_trigger_daily
where sent_on between $date_from and $date_to
group by sent_on, trigger
order by sent_on, trigger
