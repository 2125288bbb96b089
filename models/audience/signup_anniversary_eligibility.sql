{{ sequence_eligibility('signup_anniversary') }}
