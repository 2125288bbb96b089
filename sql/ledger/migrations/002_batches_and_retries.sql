-- Columns added after the first release: existing warehouses gain them on the next tick.
-- batch_id: the idempotency key of the batch the send was handed over in (idempotent providers
-- resend a batch interrupted by a crash with this same key). next_attempt_at: a retryable
-- failure is not retried before this instant (backoff across ticks).
alter table nudge.send_ledger add column if not exists batch_id varchar;
alter table nudge.send_ledger add column if not exists next_attempt_at timestamptz;
alter table nudge.send_ledger add column if not exists reason varchar;
