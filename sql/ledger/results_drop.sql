-- Forget the answers a recovery read from the journal (recovered_answers.sql).
drop table if exists results
