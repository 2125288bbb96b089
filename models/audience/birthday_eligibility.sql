{{ sequence_eligibility('birthday') }}
