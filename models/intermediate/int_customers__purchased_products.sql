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

products as (

    select
        order_products.customer_id,
        order_products.ordered_at,
        order_products.currency,
        order_products.item.product_id as bought_product_id,
        order_products.item.name as product_name,
        order_products.item.url as product_url,
        order_products.item.image_url as product_image_url,
        order_products.item.price as product_price
    from order_products

),

bought as (

    select
        customer_id,
        bought_product_id as product_id,
        max(ordered_at) as last_bought_at,
        arg_max(product_name, ordered_at) as name,
        arg_max(product_url, ordered_at) as url,
        arg_max(product_image_url, ordered_at) as image_url,
        arg_max(product_price, ordered_at) as price,
        arg_max(currency, ordered_at) as currency
    from products
    where bought_product_id is not null
    group by customer_id, bought_product_id

),

final as (

    select
        *,
        -- 1 for the product the customer bought most recently: picks count each customer with
        -- their latest var product_picks_history products.
        row_number() over (
            partition by customer_id order by last_bought_at desc, product_id asc
        ) as purchase_rank
    from bought

)

select * from final
