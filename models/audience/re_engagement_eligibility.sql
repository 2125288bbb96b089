{{ sequence_eligibility('re_engagement') }}
