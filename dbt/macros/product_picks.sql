{#- Product picks: the products most often bought by the customers who bought what a customer
    bought (int_products__co_purchased, summed over everything they bought), never one they
    already bought; the top var product_picks_count, best first (ties by product id, so reruns
    agree).

    nudge_product_picks_ctes(customers) writes the CTEs that end in `product_picks`, one row per
    customer and pick (the columns of int_customers__product_picks). customers is a query of the
    customer ids to pick for, or none for every buyer. A trigger model picks only for the
    entries it can send at this tick: ranking every buyer's picks each hour was the slowest
    model of a steady tick at 54M events (24 s), for the few hundred entries that read them. -#}
{% macro nudge_product_picks_ctes(customers=none) -%}
picks_purchases as (

    select * from {{ ref('int_customers__purchased_products') }}

),

picks_pairs as (

    select * from {{ ref('int_products__co_purchased') }}

),

-- What the customers to pick for bought.
picks_bought as (

    select * from picks_purchases
    {%- if customers %}
    where customer_id in ({{ customers }})
    {%- endif %}

),

picks_candidates as (

    select
        picks_bought.customer_id,
        picks_pairs.also_bought_product_id as product_id,
        sum(picks_pairs.customers) as score
    from picks_bought
    inner join picks_pairs
        on picks_bought.product_id = picks_pairs.product_id
    where picks_bought.purchase_rank <= {{ var('product_picks_history') | int }}
    group by picks_bought.customer_id, picks_pairs.also_bought_product_id

),

picks_fresh as (

    select picks_candidates.*
    from picks_candidates
    left join picks_bought
        on
            picks_candidates.customer_id = picks_bought.customer_id
            and picks_candidates.product_id = picks_bought.product_id
    where picks_bought.product_id is null

),

picks_all_ranked as (

    select
        *,
        row_number() over (
            partition by customer_id order by score desc, product_id asc
        ) as pick_rank
    from picks_fresh

),

picks_ranked as (

    select * from picks_all_ranked
    where pick_rank <= {{ var('product_picks_count') | int }}

),

-- How the shop last described each picked product, for the email (from every buyer of it).
picks_catalog as (

    select
        product_id,
        {{ nudge_latest('name', 'last_bought_at', 'customer_id') }} as name,
        {{ nudge_latest('url', 'last_bought_at', 'customer_id') }} as url,
        {{ nudge_latest('image_url', 'last_bought_at', 'customer_id') }} as image_url,
        {{ nudge_latest('price', 'last_bought_at', 'customer_id') }} as price,
        {{ nudge_latest('currency', 'last_bought_at', 'customer_id') }} as currency
    from picks_purchases
    where product_id in (select picks_ranked.product_id from picks_ranked)
    group by product_id

),

product_picks as (

    select
        picks_ranked.customer_id,
        picks_ranked.pick_rank,
        picks_ranked.product_id,
        picks_catalog.name,
        picks_catalog.url,
        picks_catalog.image_url,
        picks_catalog.price,
        picks_catalog.currency,
        picks_ranked.score
    from picks_ranked
    inner join picks_catalog
        on picks_ranked.product_id = picks_catalog.product_id

)
{%- endmacro %}

{#- The CTE `picks` (after those of nudge_product_picks_ctes): each customer's picks as the list
    templates render as recommended_products, best first. customers: the query of the customer
    ids the trigger model can send to at this tick (its entries in nudge_entry_window). Usage,
    in a trigger model's with, after the CTE of those entries:
        {{ nudge_product_picks_cte('select customer_id from entries') }},
    then left join picks on the customer and coalesce(picks.recommended_products, {{ nudge_no_records() }}). -#}
{% macro nudge_product_picks_cte(customers) -%}
-- depends_on: {{ ref('int_customers__product_picks') }} (the same picks for every buyer, the
-- view marketers read; the dependency keeps it built by the tick and shows it in the lineage)
{{ nudge_product_picks_ctes(customers) }},

picks as (

    select
        customer_id,
        {{ nudge_agg_records({
            'product_id': 'product_id',
            'name': 'name',
            'url': 'url',
            'image_url': 'image_url',
            'price': 'price',
            'currency': 'currency',
        }, order_by='pick_rank') }} as recommended_products
    from product_picks
    group by customer_id

)
{%- endmacro %}
