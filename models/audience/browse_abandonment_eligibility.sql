{{ sequence_eligibility('browse_abandonment') }}
