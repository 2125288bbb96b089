{#- The items of a cart or an order as the templates render them, one record per product where
    `where` holds, in `order_by` order: product_id, name (the product id when the shop sent no
    name), quantity (the `quantity` column given), price, url and image_url. One place for the
    shape both int_carts__summarized and int_orders__itemized build. -#}
{% macro nudge_item_records(quantity, order_by, where) -%}
    {{ nudge_agg_records({
        'product_id': 'product_id',
        'name': 'coalesce(name, ' ~ nudge_truncate('product_id', 'max_product_name_chars') ~ ')',
        'quantity': quantity,
        'price': 'price',
        'url': 'url',
        'image_url': 'image_url',
    }, order_by=order_by) }} filter (where {{ where }})
{%- endmacro %}
