-- "Customers who bought X also bought Y": for each pair of products, how many customers bought
-- both (in one order or in two). Pairs fewer than var product_picks_min_customers customers
-- share are chance and left out. Each customer counts with their latest
-- var product_picks_history products, so a reseller's thousand products cannot square the work.
with

purchases as (

    select * from {{ ref('int_customers__purchased_products') }}

),

recent as (

    select
        customer_id,
        product_id
    from purchases
    qualify row_number() over (
            partition by customer_id order by last_bought_at desc, product_id asc
        ) <= {{ var('product_picks_history') | int }}

),

final as (

    select
        bought.product_id,
        bought_too.product_id as also_bought_product_id,
        count(*) as customers
    from recent as bought
    inner join recent as bought_too
        on
            bought.customer_id = bought_too.customer_id
            and bought.product_id != bought_too.product_id
    group by all
    having count(*) >= {{ var('product_picks_min_customers') | int }}

)

select * from final
