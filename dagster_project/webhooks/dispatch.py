"""``receive``: the one entry point the web service calls for every provider's webhook."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dagster_project.webhooks import nudge, postmark, resend, sendgrid, ses
from dagster_project.webhooks.base import Parsed, Rejected, WebhookSettings
from dagster_project.webhooks.common import lower_headers

# Each takes (lowercased headers, body, settings, *, now); ses also fetch_certificate.
RECEIVERS: dict[str, Callable[..., Parsed]] = {
    "sendgrid": sendgrid.receive,
    "postmark": postmark.receive,
    "ses": ses.receive,
    "resend": resend.receive,
    "webhook": nudge.receive,
}


def receive(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    settings: WebhookSettings,
    *,
    now: float,
    fetch_certificate: Callable[[str], bytes] | None = None,
) -> Parsed:
    """Verify one webhook request from ``provider`` and parse its events.

    ``headers`` may use any case; ``body`` is the raw request body, exactly as received (the
    signatures cover its bytes); ``now`` is the current Unix time the timestamps are checked
    against; ``fetch_certificate`` GETs SNS signing certificates (default: httpx, verified
    TLS, 5 s timeout). Raises :class:`Rejected` (``.status``, ``.reason``) when the request
    must be refused; otherwise the caller stores ``events`` and answers 2xx.
    """
    receiver = RECEIVERS.get(provider)
    if receiver is None:
        raise Rejected(404, "unknown webhook provider")
    lowered = lower_headers(headers)
    if provider == "ses":
        return ses.receive(lowered, body, settings, now=now, fetch_certificate=fetch_certificate)
    return receiver(lowered, body, settings, now=now)
