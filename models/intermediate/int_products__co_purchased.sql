-- "Customers who bought X also bought Y": for each pair of products, how many customers bought
-- both (in one order or in two). Pairs fewer than var product_picks_min_customers customers
-- share are chance and left out. Each customer counts with their latest
-- var product_picks_history products, so a reseller's thousand products cannot square the work;
-- each product keeps its var product_picks_partners strongest partners.
with

purchases as (

    select * from {{ ref('int_customers__purchased_products') }}

),

recent as (

    select
        customer_id,
        product_id
    from purchases
    where purchase_rank <= {{ var('product_picks_history') | int }}

),

pairs as (

    select
        bought.product_id,
        bought_too.product_id as also_bought_product_id,
        count(*) as customers
    from recent as bought
    inner join recent as bought_too
        on
            bought.customer_id = bought_too.customer_id
            and bought.product_id != bought_too.product_id
    group by bought.product_id, bought_too.product_id
    having count(*) >= {{ var('product_picks_min_customers') | int }}

),

-- A best seller is bought with everything: its strongest var product_picks_partners partners
-- are all a pick can use, and they keep the picks' work per customer bounded.
ranked as (

    select
        *,
        row_number() over (
            partition by product_id order by customers desc, also_bought_product_id asc
        ) as partner_rank
    from pairs

),

final as (

    select
        product_id,
        also_bought_product_id,
        customers
    from ranked
    where partner_rank <= {{ var('product_picks_partners') | int }}

)

select * from final
