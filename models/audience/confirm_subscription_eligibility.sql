{{ sequence_eligibility('confirm_subscription') }}
