{{ config(materialized='view') }}
-- Product picks per customer (macro nudge_product_picks_ctes, in macros/product_picks.sql), for
-- every buyer. A view: the trigger models pick only for the entries they can send at the tick
-- (nudge_product_picks_cte), so a table of every buyer's picks rebuilt each hour was work
-- nobody read; a marketer who queries this view gets them computed from the latest tick.
with

{{ nudge_product_picks_ctes() }},

final as (

    select * from product_picks

)

select * from final
