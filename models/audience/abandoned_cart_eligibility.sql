{{
    eligibility(
        'abandoned_cart_entries',
        trigger='abandoned_cart',
        step='reminder',
        category='marketing',
    )
}}
