{{ sequence_eligibility('abandoned_cart') }}
