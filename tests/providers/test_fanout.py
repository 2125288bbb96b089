"""The one-request-per-message core (providers/fanout.py) on its own, through a tiny adapter."""

from __future__ import annotations

import time
from typing import Any

from dagster_project.masking import mask_emails_in_text
from dagster_project.providers.fanout import Attempt, FanoutProvider
from dagster_project.providers.retry import check_tuning
from tests.support.factories import make_message
from tests.support.providers import RecordingJournal


class Exploding(FanoutProvider[Any]):
    """Hands every message over, then its attempt raises something unexpected."""

    name = "exploding"

    def __init__(self) -> None:
        check_tuning(1.0, 2, 1, None)
        super().__init__(
            timeout=1.0,
            max_concurrency=2,
            max_attempts=1,
            requests_per_second=None,
            backoff_base=0.1,
            backoff_max=0.1,
            sleep=lambda _: None,
            jitter=lambda: 0.0,
            clock=time.monotonic,
        )

    def _prepare(self, message: Any) -> Any:
        return message

    def _try(self, job: Any, attempts: int) -> Attempt | None:
        raise RuntimeError("connection reset mid-transaction")

    def _redact(self, text: str) -> str:
        return mask_emails_in_text(text)


def test_an_unexpected_error_after_a_hand_over_is_unknown_and_journaled() -> None:
    journal = RecordingJournal()
    with Exploding() as provider:
        (result,) = provider.send([make_message(1)], journal=journal)
    # The request may have reached the server before the error: never resent blindly.
    assert result.status == "unknown"
    assert "connection reset" in (result.error or "")
    assert [event[0] for event in journal.events] == ["handed_over", "answered"]
