{#- The CTE `picks`: each customer's product picks (int_customers__product_picks) as the list
    templates render as recommended_products, best first. Usage, in a trigger model's with:
        {{ nudge_product_picks_cte() }},
    then left join picks on the customer and coalesce(picks.recommended_products, {{ nudge_no_records() }}). -#}
{% macro nudge_product_picks_cte() -%}
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
    from {{ ref('int_customers__product_picks') }}
    group by customer_id

)
{%- endmacro %}
