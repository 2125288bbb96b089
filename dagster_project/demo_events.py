"""The demo's provider: after each simulated tick, what a real provider would report about the
emails that tick sent, posted through ``nudge serve``'s real event webhook.

The demo mails into the local outbox, which reports nothing; a real provider would, within
minutes: deliveries, opens (some of them Apple Mail Privacy Protection's machine opens),
clicks, a few bounces, the odd complaint and unsubscribe. This module makes those reports,
deterministic per send (a hash of its send_id, so a rerun reports the same), and posts them as
a gateway would: signed with nudge's own webhook scheme to ``POST /webhooks/webhook`` of the
real service app, running on loopback for the length of the demo. The next tick drains them,
so the demo's later ticks show suppressions (hard_bounce, complaint) and engagement-based
skips (the cart discount withheld from those who clicked a reminder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import uvicorn

from .config import Settings
from .landing import LandingStore
from .links import LinkSettings
from .providers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook_body
from .serve import create_app
from .warehouse import open_warehouse, sql_for
from .webhooks import WebhookSettings

# Shares of sends, by a stable draw per send_id (in ten-thousandths).
HARD_BOUNCE = 150  # 1.5 %
SOFT_BOUNCE = 100  # 1 %
COMPLAINT = 50  # 0.5 %: above a healthy list's, so a 3,000-customer demo shows a few
UNSUBSCRIBE = 60  # 0.6 %
OPEN = 4500  # 45 % of delivered
MACHINE_OPEN = 3000  # of opens, 30 % are Apple Mail Privacy Protection
CLICK = 3000  # of opens, 30 % click


@dataclass(frozen=True)
class Feed:
    """What one feed posted and the service stored."""

    posted: Counter[str]
    stored: int


def _draw(send_id: str, salt: str) -> int:
    return int(hashlib.sha256(f"{salt}:{send_id}".encode()).hexdigest()[:8], 16) % 10000


def synthetic_events(sends: list[tuple[str, str, str]], as_of: datetime) -> list[dict[str, object]]:
    """Reports about these sends ``(send_id, email, url)``: at most one outcome each, an open
    and a click for some, all within the hour after ``as_of``."""
    events: list[dict[str, object]] = []

    def add(send_id: str, email: str, kind: str, minutes: int, **extra: object) -> None:
        events.append(
            {
                "event_id": f"demo:{kind}:{send_id}",
                "send_id": send_id,
                "type": kind,
                "occurred_at": (as_of + timedelta(minutes=minutes)).isoformat(),
                "email": email,
                **extra,
            }
        )

    for send_id, email, url in sends:
        outcome = _draw(send_id, "outcome")
        if outcome < HARD_BOUNCE:
            add(send_id, email, "bounced", 1, bounce_type="hard")
            continue
        if outcome < HARD_BOUNCE + SOFT_BOUNCE:
            add(send_id, email, "bounced", 2, bounce_type="soft")
            continue
        add(send_id, email, "delivered", 1)
        if outcome < HARD_BOUNCE + SOFT_BOUNCE + COMPLAINT:
            add(send_id, email, "complained", 30)
        elif outcome < HARD_BOUNCE + SOFT_BOUNCE + COMPLAINT + UNSUBSCRIBE:
            add(send_id, email, "unsubscribed", 25)
        if _draw(send_id, "open") < OPEN:
            machine = _draw(send_id, "machine") < MACHINE_OPEN
            add(send_id, email, "opened", 5 if machine else 12, machine_open=machine)
            if not machine and _draw(send_id, "click") < CLICK:
                add(send_id, email, "clicked", 14, **({"url": url} if url else {}))
    return events


def is_clicked(send_id: str) -> bool:
    """Whether :func:`synthetic_events` reports a click on this send."""
    return (
        _draw(send_id, "outcome") >= HARD_BOUNCE + SOFT_BOUNCE
        and _draw(send_id, "open") < OPEN
        and _draw(send_id, "machine") >= MACHINE_OPEN
        and _draw(send_id, "click") < CLICK
    )


@contextlib.contextmanager
def webhook_service(settings: Settings) -> Iterator[tuple[str, str]]:
    """``nudge serve``'s app on a free loopback port, with a fresh gateway secret: (url,
    secret). Stored events land in the warehouse's landing store, like the real service's."""
    secret = secrets.token_hex(32)
    store = LandingStore(settings.landing_path)
    app = create_app(LinkSettings.from_env(), store, webhooks=WebhookSettings(nudge_secret=secret))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, access_log=False, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="nudge-demo-webhooks", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo's webhook service did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", secret
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def feed(settings: Settings, service: tuple[str, str], as_of: datetime) -> Feed:
    """Post the reports about the sends of the tick at ``as_of`` through the webhook."""
    url, secret = service
    with contextlib.closing(open_warehouse(settings)) as con:
        sends = [
            (str(send_id), str(email), str(link or ""))
            for send_id, email, link in con.execute(
                sql_for(con, "reports/demo_sent_at_tick"), {"as_of": as_of}
            ).fetchall()
        ]
    events = synthetic_events(sends, as_of)
    stored = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(events), 500):  # provider-sized batches
            body = json.dumps({"events": events[start : start + 500]}).encode()
            stamp = int(time.time())
            response = client.post(
                "/webhooks/webhook",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: str(stamp),
                    SIGNATURE_HEADER: sign_webhook_body(secret, body, stamp),
                },
            )
            response.raise_for_status()
            stored += int(response.json()["new"])
    return Feed(Counter(str(e["type"]) for e in events), stored)
