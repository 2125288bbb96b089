{{ sequence_eligibility('shipping_notification') }}
