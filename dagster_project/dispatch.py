"""One trigger's push for one tick: guards, diff, plan, render, re-checks, send, settle.

What if the process dies here? Each step leaves the ledger in a state the next run handles:

- before ``plan``: nothing recorded, the next tick plans the same sends again;
- after ``plan``: rows are ``planned`` and never reached the ESP; the next run resumes them,
  after re-checking them against its own eligibility table (consent may have changed);
- mid-push: every request is journaled before it goes out and when its answer comes back
  (``handover.py``). The next run settles the answered sends from the journal, plans again the
  ones never handed over, and only a request handed over without an answer is in doubt (at
  most one per provider worker): an idempotent provider gets it again under its key, any other
  leaves it ``unknown`` (``nudge resolve-unknown`` decides);
- mid-``settle``: the settle is one transaction, rolled back whole: the journal still holds the
  answers, as in the previous case;
- after ``settle``: final, except ``failed_retryable``, which later ticks resume with backoff.

The named failpoints (``failpoints.hit``) are where the kill-and-rerun tests SIGKILL a real
process. What if two runs do this at once? The caller holds the warehouse lock, and the
ledger's primary key makes ``plan`` claim each send_id for exactly one run. What if the person
unsubscribed a second ago? Each batch is re-checked against consent just before it goes out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from . import audit, failpoints, guards, handover, ledger, render_workers
from .compose import Rendered, render_batch
from .handover import HandoverJournal
from .ledger import PlannedRow
from .links import LinkSettings
from .masking import mask_emails_in_text
from .policy import DispatchPolicy
from .providers import Provider, SendResult
from .rendering import Renderer
from .runs import TriggerSummary, record_run
from .triggers import ProjectRelations, TriggerSpec
from .warehouse import Connection, dialect, journal_dir, one, quote_relation, sql_for

log = logging.getLogger(__name__)

# A batch's answers, durable in the journal, not settled yet: results, request key, when it
# was handed over.
Answered = tuple[list[SendResult], str, datetime]


def eligibility_counts(
    con: Connection, relation: str
) -> tuple[datetime | None, int, int, dict[str, int]]:
    """The as_of the table was built for, its candidates, eligible rows and exclusions by reason."""
    table = quote_relation(relation)
    totals = one(con, sql_for(con, "reports/eligibility_counts").format(eligibility=table))
    assert totals is not None
    reasons = con.execute(sql_for(con, "reports/exclusions").format(eligibility=table)).fetchall()
    return totals[0], totals[1], totals[2], dict(reasons)


def dispatch_trigger(
    con: Connection,
    spec: TriggerSpec,
    *,
    provider: Provider,
    renderer: Renderer,
    as_of: datetime,
    run_id: str,
    from_email: str,
    policy: DispatchPolicy | None = None,
    relations: ProjectRelations | None = None,
    consent_cutoff: datetime | Callable[[], datetime] | None = None,
    competitors: Sequence[str] = (),
    links: LinkSettings | None = None,
    pending: guards.PendingChanges | None = None,
) -> TriggerSummary:
    """Send this tick's due emails of one trigger exactly once; return what happened.

    The ledger must exist (``ledger.ensure_ledger``, run once per tick before dbt) and the
    caller must hold the warehouse lock. ``consent_cutoff``: consent changes up to this instant
    are honoured at push time, asked again before every batch when it is a function (the live
    tick passes one that says "now", so an unsubscribe during a long push is honoured by the
    next batch; a simulation of a past tick passes its as_of). Every call, even a failed one,
    leaves its row in ``nudge.runs``. ``competitors``: the eligibility relations of the
    marketing triggers with a higher priority (they win a customer's frequency-cap slot).
    ``links``: the unsubscribe and confirm links put in each email. ``pending``: the consent
    changes ``nudge serve`` stored and no tick drained yet, which the re-check also honours.
    """
    policy = policy or DispatchPolicy()
    summary = TriggerSummary(trigger=spec.name, steps=spec.step_names, as_of=as_of.isoformat())
    started = datetime.now(UTC)
    clock = time.monotonic()
    if spec.name in policy.paused:
        # Switched off by configuration: nothing planned, resumed or sent. Steps that fall due
        # meanwhile go out when it is switched on again if their grace window is still open.
        summary.outcome = "paused"
        summary.skipped_reason = f"trigger {spec.name} is paused (NUDGE_PAUSED_TRIGGERS)"
        record_run(con, summary, run_id=run_id, provider=provider.name, started=started)
        audit.record(con, "paused", actor=f"run:{run_id}", subject=spec.name)
        return summary
    if spec.name in policy.guards.approved:
        # An operator released the guards' hold on this trigger for this run.
        audit.record(con, "approve", actor=f"run:{run_id}", subject=spec.name)
    for template in spec.templates:
        renderer.check(template)
    push = _Push(
        con,
        spec,
        summary,
        provider=provider,
        renderer=renderer,
        as_of=as_of,
        run_id=run_id,
        from_email=from_email,
        policy=policy,
        relations=relations or ProjectRelations(),
        consent_cutoff=consent_cutoff or as_of,
        # Every marketing email carries a working unsubscribe link: the environment's links
        # (a generated secret and loopback URL on a machine with nothing configured).
        links=links or LinkSettings.from_env(),
        pending=pending,
    )
    try:
        push.run(competitors)
    except Exception as exc:
        summary.outcome = "failed"
        summary.errors.insert(0, mask_emails_in_text(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        summary.duration_seconds = round(time.monotonic() - clock, 3)
        record_run(con, summary, run_id=run_id, provider=provider.name, started=started)
    return summary


class _Push:
    """The steps of one trigger's push, in order (see the module docstring)."""

    def __init__(
        self,
        con: Connection,
        spec: TriggerSpec,
        summary: TriggerSummary,
        *,
        provider: Provider,
        renderer: Renderer,
        as_of: datetime,
        run_id: str,
        from_email: str,
        policy: DispatchPolicy,
        relations: ProjectRelations,
        consent_cutoff: datetime | Callable[[], datetime],
        links: LinkSettings | None = None,
        pending: guards.PendingChanges | None = None,
    ) -> None:
        self.con = con
        self.links = links
        self.pending = pending
        self.spec = spec
        self.summary = summary
        self.provider = provider
        self.renderer = renderer
        self.as_of = as_of
        self.run_id = run_id
        self.from_email = from_email
        self.policy = policy
        self.relations = relations
        self._consent_cutoff = consent_cutoff
        self.journal = journal_dir(con)
        # Batches answered (and journaled) but not settled yet: see _push_batches.
        self._answered: list[Answered] = []
        # Rendering processes, during the push of a big enough tick (see render_workers.py).
        self._workers: render_workers.RenderWorkers | None = None
        self.consent = guards.ConsentLists(
            subscriptions=relations.subscriptions,
            consent_list=spec.consent_list,
            suppression_list=spec.suppression_list,
            marketing=spec.category == "marketing",
        )

    def _cutoff(self) -> datetime:
        """The consent cutoff for the batch about to go out (see ``dispatch_trigger``)."""
        cutoff = self._consent_cutoff
        return cutoff() if callable(cutoff) else cutoff

    def run(self, competitors: Sequence[str]) -> None:
        summary = self.summary
        if not self._table_is_for_this_tick():
            return
        # On PostgreSQL the journal is local and the ledger shared: a dead push's journal
        # elsewhere stops this one (guards.check_journal).
        tracked = dialect(self.con) == "postgres"
        if tracked:
            guards.check_journal(self.con, self.spec.name, self.journal)
        # What pushes of this trigger that died left in the journal: settled or taken over by
        # resume, then the files go (a later tick's stay, for a tick at or after it). The
        # answers in it are settled first, whatever follows: a hold must not leave delivered
        # sends uncounted by the guards and the caps.
        left, files = handover.read(self.journal, self.spec.name, as_of=self.as_of)
        if files:
            answered = ledger.settle_answers(
                self.con,
                trigger=self.spec.name,
                run_id=self.run_id,
                as_of=self.as_of,
                journal=left,
                retry=self.policy.retry,
            )
            summary.resumed += sum(answered.values())
        if self._held_for_freshness():
            return
        if self._held_for_deliverability():
            return
        # Nothing unfinished and nothing due (most steps of most ticks): resume and planning
        # would change no row, so their transactions are skipped.
        idle = not files and ledger.is_idle(
            self.con, trigger=self.spec.name, eligibility=self.spec.relation, as_of=self.as_of
        )
        if not idle:
            resumed = ledger.resume(
                self.con,
                trigger=self.spec.name,
                eligibility=self.spec.relation,
                run_id=self.run_id,
                as_of=self.as_of,
                provider=self.provider.name,
                idempotent=self.provider.limits.idempotent,
                retry=self.policy.retry,
                journal=left,
            )
            handover.discard(files)
            # Every unfinished send of an earlier run taken over: sent now, or settled as
            # skipped, expired, failed or unknown.
            summary.resumed += sum(resumed.values())
        if tracked and not handover.pending(self.journal, self.spec.name):
            guards.journal_settled(self.con, self.spec.name)
        if not idle:
            self._plan(competitors)
        failpoints.hit("after_plan")
        failpoints.pause(f"before_push:{self.spec.name}")
        limits = self.provider.limits
        batch_size = min(self.policy.batch_size or limits.default_batch, limits.max_batch)
        batches = ledger.planned_batches(
            self.con, trigger=self.spec.name, run_id=self.run_id, batch_size=batch_size
        )
        if tracked and batches:
            guards.journal_opened(self.con, self.spec.name, self.journal)
        with HandoverJournal(
            self.journal, run_id=self.run_id, trigger=self.spec.name, as_of=self.as_of
        ) as journal:
            self._push_batches(batches, journal)
        if tracked and batches and not handover.pending(self.journal, self.spec.name):
            # Closed with every batch settled and its file deleted: nothing on the wire (unless
            # a later tick's dead push left its journal, read above).
            guards.journal_settled(self.con, self.spec.name)
        self._count()

    def _table_is_for_this_tick(self) -> bool:
        summary = self.summary
        built_for, candidates, eligible, excluded = eligibility_counts(self.con, self.spec.relation)
        summary.candidates, summary.eligible, summary.excluded = candidates, eligible, excluded
        summary.already_sent = excluded.get("already_sent", 0)
        if candidates and built_for is not None and built_for != self.as_of:
            # Another run rebuilt the table for its own tick between our dbt build and this
            # step; that run sends from it. Sending its rows under our as_of would misjudge
            # due and expiry.
            summary.outcome = "stale_table"
            summary.skipped_reason = (
                f"{self.spec.relation} was built for as_of {built_for.isoformat()}, not this "
                f"tick's {self.as_of.isoformat()}; another run rebuilt it and will send from it"
            )
            log.warning(summary.skipped_reason)
            return False
        return True

    def _planning(self, competitors: Sequence[str] = ()) -> Any:
        return ledger.planning(
            self.con,
            eligibility=self.spec.relation,
            run_id=self.run_id,
            as_of=self.as_of,
            provider=self.provider.name,
            cap_policy=self.spec.sequence.cap_policy,
            caps=self.policy.caps,
            competitors=competitors,
        )

    def _held_for_freshness(self) -> bool:
        if not self.spec.fires_on_absence:
            return False
        reason = guards.freshness_hold(
            self.spec.name,
            guards.newest_event(self.con, self.relations.events),
            self.as_of,
            self.policy.guards,
        )
        if not reason:
            return False
        # Held whole: resuming old sends would re-check them against the same stale data.
        with self._planning() as decision:
            decision.hold()
        self._hold(decision.planned, reason, "source_freshness")
        return True

    def _held_for_deliverability(self) -> bool:
        if self.spec.category != "marketing" or self.spec.name in self.policy.guards.approved:
            return False
        # Real time, not the tick's: a sender's reputation is today's, even for a catch-up run
        # of yesterday's tick.
        figures = guards.deliverability(self.con, self.provider.name, datetime.now(UTC))
        reason = guards.deliverability_hold(
            self.spec.name, self.spec.category, figures, self.policy.guards
        )
        if not reason:
            return False
        # Held whole, resumed sends included: each is one more email to a list that bounces
        # or complains.
        with self._planning() as decision:
            decision.hold()
        self._hold(decision.planned, reason, "deliverability")
        return True

    def _plan(self, competitors: Sequence[str]) -> None:
        summary = self.summary
        reason = None
        with self._planning(competitors) as decision:
            recent = ledger.recent_new_counts(
                self.con,
                trigger=self.spec.name,
                before=self.as_of,
                ticks=self.policy.guards.mass_send_history_ticks,
            )
            reason = guards.mass_send_hold(
                self.spec.name, decision.planned, recent, self.policy.guards
            )
            if reason:
                decision.hold()
        # Capped by the frequency cap at this tick (recorded as deferred unless held).
        summary.deferred = decision.deferred
        if decision.held:
            self._hold(decision.planned, reason or "held", "mass_send")
        else:
            summary.new = decision.planned
            summary.skipped_at_plan = decision.by_status.get("skipped", 0)

    def _hold(self, count: int, reason: str, guard: str) -> None:
        summary = self.summary
        summary.outcome = "held"
        summary.held_by = guard
        summary.held = count
        summary.hold_reason = reason
        log.error("trigger %s: %d new sends held: %s", summary.trigger, count, reason)

    def _push_batches(self, batches: list[list[PlannedRow]], journal: HandoverJournal) -> None:
        """Push the batches in order; while one is on the wire, the ones answered before it
        are settled (once ``policy.settle_every`` sends are waiting) and the next one rendered.

        Rendering is pure (``compose.py``: no ledger, no journal), so rendering ahead moves no
        step a crash could interrupt. Settling a batch while the next one is on the wire does
        not either: its answers were made durable in the journal as soon as they came back,
        before the next batch was handed over, so a crash before its settle commits is resumed
        from the journal, as a crash mid-settle always was. Each batch is still re-checked
        against consent just before it goes out. Both only fill time the push spent waiting for
        the provider (rendering was half of a batch lane's time, settles up to a sixth). The
        provider's ``send`` runs on one thread of its own, one call at a time, as before.
        """
        if not batches:
            return
        with contextlib.ExitStack() as stack:
            processes = self.policy.render_processes
            if processes > 1 and sum(map(len, batches)) >= render_workers.MIN_SENDS:
                try:
                    self._workers = stack.enter_context(render_workers.RenderWorkers(processes))
                except OSError as exc:  # no process to spare: this one renders, as for a small push
                    log.warning("trigger %s: rendering in-process: %s", self.spec.name, exc)
            wire = stack.enter_context(
                ThreadPoolExecutor(1, thread_name_prefix=f"nudge-send-{self.spec.name}")
            )
            rendered = self._render(batches[0])
            try:
                for index, batch in enumerate(batches):
                    following = batches[index + 1] if index + 1 < len(batches) else None
                    rendered = self._push_batch(batch, rendered, journal, wire, following)
            except BaseException:
                try:
                    self._settle_answered()
                except Exception as exc:  # the journal keeps them for the next run
                    log.error("could not settle the answers in hand: %r", exc)
                raise
            finally:
                self._workers = None
            self._settle_answered()

    def _render(self, batch: list[PlannedRow] | None) -> Rendered:
        if not batch:
            return [], []
        rows = [(send_id, context) for send_id, _, context, _ in batch]
        if self._workers is not None:
            try:
                return self._workers.render(
                    self.spec,
                    self.renderer,
                    rows,
                    self.from_email,
                    links=self.links,
                    max_message_bytes=self.policy.max_message_bytes,
                )
            except render_workers.WorkersBroken as exc:
                # Rendering is pure: this process renders the batch again, and the rest. (The
                # workers are killed already; the push's exit closes them once more, harmlessly.)
                log.warning("trigger %s: rendering in-process from now on: %s", self.spec.name, exc)
                self._workers = None
        return render_batch(
            self.spec,
            self.renderer,
            rows,
            self.from_email,
            links=self.links,
            max_message_bytes=self.policy.max_message_bytes,
        )

    def _settle_answered(self, *, at_least: int = 0) -> None:
        """Settle the batches whose answers are in hand (and in the journal), in one
        transaction; unless ``at_least`` of their sends are waiting, leave them for later."""
        waiting = self._answered
        if not waiting or sum(len(results) for results, _, _ in waiting) < at_least:
            return
        ledger.settle_batches(
            self.con,
            run_id=self.run_id,
            batches=waiting,
            as_of=self.as_of,
            retry=self.policy.retry,
        )
        self._answered = []
        for results, _, _ in waiting:
            self.summary.errors.extend(
                f"{r.send_id}: {r.error}" for r in results if r.status != "sent"
            )

    def _push_batch(
        self,
        batch: list[PlannedRow],
        rendered: Rendered,
        journal: HandoverJournal,
        wire: ThreadPoolExecutor,
        following: list[PlannedRow] | None,
    ) -> Rendered:
        """Settle the batch's render failures, re-check it and send it; while it is on the
        wire, settle the answers in hand and render ``following``. Return the following batch
        rendered; this batch's answers, durable in the journal, wait in ``_answered``."""
        messages, failures = rendered
        # A request resent under its key after a crash must go whole (same key, same body).
        resend_key = batch[0][3]
        if resend_key is not None and failures:
            # One of its emails no longer renders (a lower size limit, a changed template): it
            # cannot go out as it was, and its first attempt may have been delivered.
            self._unresendable(batch, f"{len(failures)} could not be rendered again")
            return self._render(following)
        ledger.settle(
            self.con,
            run_id=self.run_id,
            results=failures,
            as_of=self.as_of,
            retry=self.policy.retry,
        )
        self.summary.errors.extend(f"{f.send_id}: {f.error}" for f in failures)

        cutoff = self._cutoff()
        messages, opted_out = guards.recheck_consent(
            self.con, messages, self.consent, cutoff=cutoff, pending=self.pending
        )
        if resend_key is not None and opted_out:
            # Someone in it said no since: it cannot go out as it was either.
            self._unresendable(batch, "; ".join(f"{len(d.send_ids)} {d.reason}" for d in opted_out))
            return self._render(following)
        for dropped in opted_out:
            ledger.skip(
                self.con,
                run_id=self.run_id,
                send_ids=dropped.send_ids,
                reason=dropped.reason,
                error=dropped.error,
                as_of=self.as_of,
            )
        if messages and self.spec.sequence.quiet_hours and resend_key is None:
            # The rows stay planned: the next tick resumes them once it is morning there.
            night = guards.at_night(
                messages,
                {send_id: context for send_id, _, context, _ in batch},
                instant=cutoff,
                window=self.spec.quiet_hours_window,
            )
            if night:
                self.summary.waiting_quiet_hours += len(night)
                messages = [m for m in messages if m.send_id not in night]
        if not messages:
            return self._render(following)

        key = resend_key or ledger.batch_key([m.send_id for m in messages])
        handed_over_at = datetime.now(UTC)
        sending = wire.submit(self.provider.send, messages, idempotency_key=key, journal=journal)
        upcoming: Rendered = ([], [])
        # A bug, or a ledger that fails: raised once the wire is quiet and this batch's answers
        # are in the journal.
        failure: BaseException | None = None
        try:
            self._settle_answered(at_least=self.policy.settle_every)
            upcoming = self._render(following)
        except BaseException as exc:
            failure = exc
        try:
            results = sending.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C, Dagster's termination), or the provider
            # failed: from now on the wire's next hand-over fails and nothing more goes out.
            # Leaving, the executor waits for the requests already out, whose answers still
            # reach the journal (closed after, keeping its file); the next run settles them.
            journal.stop_handovers()
            if failure is not None:
                log.error("settling or rendering meanwhile had failed too: %r", failure)
            raise
        self._answered.append((results, key, handed_over_at))
        # Every answer durable in the journal before the next batch goes out, and before the
        # ledger settles (and clears) it. A journal that fails raises here: the caller then
        # settles the answers in hand before leaving.
        journal.flush()
        if failure is not None:
            raise failure
        return upcoming

    def _unresendable(self, batch: list[PlannedRow], why: str) -> None:
        """A request to resend under its key that cannot go out as it first did: nobody is
        mailed again, and every send of it is ``unknown`` (its first attempt may have been
        delivered); an operator decides (``nudge resolve-unknown``)."""
        ledger.mark_unknown(
            self.con,
            run_id=self.run_id,
            send_ids=[send_id for send_id, *_ in batch],
            reason="run_died_while_sending",
            error=f"an interrupted request could not be resent as it was: {why}",
            as_of=self.as_of,
        )

    def _count(self) -> None:
        summary = self.summary
        counts = ledger.status_counts(self.con, trigger=self.spec.name, run_id=self.run_id)
        summary.sent = counts.get("sent", 0)
        summary.failed = counts.get("failed_permanent", 0) + counts.get("failed_retryable", 0)
        summary.unknown = counts.get("unknown", 0)
        summary.expired = counts.get("expired", 0)
        summary.skipped = counts.get("skipped", 0)
        summary.holdout = counts.get("holdout", 0)
        summary.failure_rate = round(
            guards.failure_rate(summary.sent, summary.failed, summary.unknown), 4
        )
        summary.duplicate_deliveries = ledger.duplicate_deliveries(self.con, trigger=self.spec.name)
        log.info(
            "trigger %s: %d candidates, %d eligible, %d new, %d sent, %d failed, %d held, "
            "%d holdout, %d deferred",
            self.spec.name,
            summary.candidates,
            summary.eligible,
            summary.new,
            summary.sent,
            summary.failed,
            summary.held,
            summary.holdout,
            summary.deferred,
        )
