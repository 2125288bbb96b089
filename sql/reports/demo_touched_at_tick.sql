-- The demo's shoppers: whom one tick touched (sent, or held out of a send), with the cart a
-- cart email was about. Parameter: $as_of.
select
    send_id,
    customer_id,
    status,
    context ->> 'cart_id' as cart_id
from nudge.send_ledger
where status in ('sent', 'holdout') and as_of = $as_of
order by send_id
