"""A stand-in provider for tests of the push path that need no wire protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster_project.providers import Journal, Message, ProviderLimits, SendResult


class RecordingProvider:
    """Records what it was asked to send, one request per message, journaled as a real
    provider journals them; it can raise mid-batch (``die_after`` messages) or at once
    (``fail``), as a provider bug or a lost process would."""

    name = "recording"

    def __init__(
        self, *, die_after: int | None = None, fail: bool = False, max_batch: int = 1000
    ) -> None:
        self.sent: list[Message] = []
        self.die_after = die_after
        self.fail = fail
        self.limits = ProviderLimits(max_batch=max_batch)

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        if self.fail:
            raise RuntimeError("provider exploded")
        results = []
        for message in messages:
            if self.die_after is not None and len(self.sent) >= self.die_after:
                raise RuntimeError("process killed mid-batch")
            if journal is not None:
                journal.handing_over([message.send_id], idempotency_key)
            self.sent.append(message)
            result = SendResult(message.send_id, "sent", provider_message_id=f"m-{message.send_id}")
            if journal is not None:
                journal.answered([result])
            results.append(result)
        return results

    def close(self) -> None:
        pass


class RecordingJournal:
    """A :class:`~dagster_project.providers.base.Journal` that keeps what a provider told it,
    in order: ``("handed_over", ids, key)``, ``("answered", ids)``, ``("returned", ids)``."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def handing_over(self, send_ids: Sequence[str], request_key: str | None) -> None:
        self.events.append(("handed_over", tuple(send_ids), request_key))

    def answered(self, results: Sequence[SendResult]) -> None:
        self.events.append(("answered", tuple(r.send_id for r in results)))

    def returned(self, send_ids: Sequence[str]) -> None:
        self.events.append(("returned", tuple(send_ids)))
