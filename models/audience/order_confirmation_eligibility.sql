{{ sequence_eligibility('order_confirmation') }}
