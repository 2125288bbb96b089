{{ sequence_eligibility('welcome') }}
