"""``nudge serve``'s app under a real uvicorn on loopback, in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from dagster_project.landing import LandingStore
from dagster_project.links import LinkSettings
from dagster_project.serve import create_app
from dagster_project.webhooks import WebhookSettings


@dataclass(frozen=True)
class Service:
    url: str
    links: LinkSettings
    store: LandingStore


@contextlib.contextmanager
def running_service(
    links: LinkSettings,
    store: LandingStore,
    *,
    max_body_bytes: int | None = None,
    webhooks: WebhookSettings | None = None,
    fetch_certificate: Callable[[str], bytes] | None = None,
) -> Iterator[Service]:
    """uvicorn serving the app on 127.0.0.1 (a free port) until the block ends; ``webhooks``
    configures the providers' event webhooks, ``fetch_certificate`` stands in for the HTTPS
    GETs of SNS certificates and subscription URLs."""
    kwargs: dict[str, Any] = {} if max_body_bytes is None else {"max_body_bytes": max_body_bytes}
    kwargs.update(webhooks=webhooks, fetch_certificate=fetch_certificate)
    config = uvicorn.Config(
        create_app(links, store, **kwargs),
        host="127.0.0.1",
        port=0,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Service(f"http://127.0.0.1:{port}", links, store)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
