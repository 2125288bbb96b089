{{
    eligibility(
        'birthday_entries',
        trigger='birthday',
        step='greeting',
        category='marketing',
    )
}}
