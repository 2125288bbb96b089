-- Product picks per customer: the products most often bought by the customers who bought what
-- they bought (int_products__co_purchased, summed over everything they bought), never one they
-- already bought; the top var product_picks_count, best first (ties by product id, so reruns
-- agree). Templates get them as recommended_products (post_purchase_review, win_back).
with

purchases as (

    select * from {{ ref('int_customers__purchased_products') }}

),

pairs as (

    select * from {{ ref('int_products__co_purchased') }}

),

-- How the shop last described each product, for the email.
catalog as (

    select
        product_id,
        {{ nudge_latest('name', 'last_bought_at', 'customer_id') }} as name,
        {{ nudge_latest('url', 'last_bought_at', 'customer_id') }} as url,
        {{ nudge_latest('image_url', 'last_bought_at', 'customer_id') }} as image_url,
        {{ nudge_latest('price', 'last_bought_at', 'customer_id') }} as price,
        {{ nudge_latest('currency', 'last_bought_at', 'customer_id') }} as currency
    from purchases
    group by product_id

),

candidates as (

    select
        purchases.customer_id,
        pairs.also_bought_product_id as product_id,
        sum(pairs.customers) as score
    from purchases
    inner join pairs
        on purchases.product_id = pairs.product_id
    where purchases.purchase_rank <= {{ var('product_picks_history') | int }}
    group by purchases.customer_id, pairs.also_bought_product_id

),

fresh as (

    select candidates.*
    from candidates
    left join purchases
        on
            candidates.customer_id = purchases.customer_id
            and candidates.product_id = purchases.product_id
    where purchases.product_id is null

),

all_ranked as (

    select
        *,
        row_number() over (
            partition by customer_id order by score desc, product_id asc
        ) as pick_rank
    from fresh

),

ranked as (

    select * from all_ranked
    where pick_rank <= {{ var('product_picks_count') | int }}

),

final as (

    select
        ranked.customer_id,
        ranked.pick_rank,
        ranked.product_id,
        catalog.name,
        catalog.url,
        catalog.image_url,
        catalog.price,
        catalog.currency,
        ranked.score
    from ranked
    inner join catalog
        on ranked.product_id = catalog.product_id

)

select * from final
