-- Rows another run left behind when it died (the caller holds the warehouse lock, so no other
-- run is live). 'planned' rows never reached the ESP: they are taken over and sent. 'sending'
-- rows may have reached it: resent only when the provider is idempotent ($idempotent), else
-- marked 'unknown' so a person decides. Rows past their grace window expire either way.
-- Parameters: $trigger, $run_id, $as_of, $idempotent.
update nudge.send_ledger
set
    status = case
        when $as_of > expires_at and status = 'planned' then 'expired'
        when status = 'planned' or $idempotent then 'planned'
        else 'unknown'
    end,
    error = case
        when $as_of > expires_at and status = 'planned'
            then 'expired before it could be sent (run ' || run_id || ' stopped)'
        when status = 'sending' and not $idempotent
            then 'run ' || run_id || ' stopped while sending; delivery unknown, not resent'
        else error
    end,
    settled_at = case
        when
            ($as_of > expires_at and status = 'planned')
            or (status = 'sending' and not $idempotent)
            then now()
    end,
    run_id = $run_id,
    updated_at = now()
where
    trigger = $trigger
    and status in ('planned', 'sending')
    and run_id != $run_id
