"""A provider that accepts every message and delivers none: the backtest's ESP."""

from __future__ import annotations

from collections.abc import Sequence

from dagster_project.providers.base import Journal, Message, ProviderLimits, SendResult


class DryRunProvider:
    """Every message "sent", none delivered; nothing leaves the process, so no journal."""

    name = "backtest"
    limits = ProviderLimits(max_batch=1000, idempotent=True)

    def send(
        self,
        messages: Sequence[Message],
        *,
        idempotency_key: str | None = None,
        journal: Journal | None = None,
    ) -> list[SendResult]:
        return [
            SendResult(send_id=m.send_id, status="sent", provider_message_id=f"dry-{m.send_id}")
            for m in messages
        ]

    def close(self) -> None:
        pass
