-- The demo's provider reports on what one tick sent: each send with its address and, for cart
-- emails, the link a click would follow. Parameter: $as_of.
select
    send_id,
    email,
    context ->> 'cart_url' as url
from nudge.send_ledger
where status = 'sent' and as_of = $as_of
order by send_id
