-- Record the fingerprint a model is built in full with. Parameters: $relation, $fingerprint.
insert into nudge.incremental_models (relation, fingerprint, recorded_at)
values ($relation, $fingerprint, current_timestamp)
on conflict (relation) do update set
    fingerprint = excluded.fingerprint,
    recorded_at = excluded.recorded_at
