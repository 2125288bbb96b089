{{
    eligibility(
        'inactivity_entries',
        trigger='inactivity',
        step='we_miss_you',
        category='marketing',
    )
}}
