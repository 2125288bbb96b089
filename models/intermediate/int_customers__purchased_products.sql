-- Every product each customer has bought (order_completed items), once, with when they last
-- bought it and how the shop last described it. Product picks start here.
with

orders as (

    select * from {{ ref('int_orders__itemized') }}
    where items is not null

),

order_products as (

    select
        customer_id,
        ordered_at,
        currency,
        unnest(items) as item
    from orders

),

final as (

    select
        customer_id,
        item.product_id as product_id,
        max(ordered_at) as last_bought_at,
        arg_max(item.name, ordered_at) as name,
        arg_max(item.url, ordered_at) as url,
        arg_max(item.image_url, ordered_at) as image_url,
        arg_max(item.price, ordered_at) as price,
        arg_max(currency, ordered_at) as currency
    from order_products
    where item.product_id is not null
    group by all

)

select * from final
