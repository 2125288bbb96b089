{{ sequence_eligibility('post_purchase_review') }}
