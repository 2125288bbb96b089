-- Append audit rows from {rows} (a registered frame); an id already there is skipped (a
-- consent drain repeated after a crash).
insert into nudge.audit_log (audit_id, occurred_at, action, actor, subject, detail)
select
    appended.audit_id,
    appended.occurred_at,
    appended.action,
    appended.actor,
    appended.subject,
    appended.detail
from {rows} as appended
where not exists (
        select 1 from nudge.audit_log as known
        where known.audit_id = appended.audit_id
    )
returning audit_id
