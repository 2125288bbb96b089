-- Per trigger, every send up to the last reporting build: the rates a marketer looks at first.
select
    trigger,
    sum(sent) as sent,
    sum(delivered) / sum(sent) as delivery_rate,
    sum(opened) / sum(sent) as open_rate,
    sum(clicked) / sum(sent) as click_rate,
    sum(unsubscribed) / sum(sent) as unsubscribe_rate,
    sum(conversions) as conversions,
    sum(conversions) / sum(sent) as conversion_rate
from reporting.rpt_trigger_daily
group by trigger
order by trigger
