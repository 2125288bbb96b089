{{ sequence_eligibility('win_back') }}
