-- The orders already in the demo's warehouse, whose baskets its shoppers buy again after an
-- email (demo_shoppers.py). The demo plants malformed rows on purpose: demo_shoppers._baskets
-- keeps only a valid document with a products list, and orders them by event id, in Python,
-- so both engines choose the same baskets (PostgreSQL's `order by` follows the database's
-- collation).
select
    event_id,
    properties
from raw.events
where event_name = 'order_completed'
