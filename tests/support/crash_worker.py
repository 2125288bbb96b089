"""A real send process for the kill-and-rerun tests: ``python -m tests.support.crash_worker ...``.

It runs one trigger's push (``dispatch_trigger``) against a warehouse the test prepared, the way
the Dagster send asset does: under the warehouse lock, with a real provider talking HTTP to the
test's local server. The test kills it with SIGKILL, from outside at a random moment or from
inside at a named failpoint (``NUDGE_FAILPOINTS``), then reruns and checks the ledger.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from dagster_project.clock import parse_as_of
from dagster_project.config import POSTGRES_PASSWORD_VAR, Settings, postgres_from_url
from dagster_project.dispatch import dispatch_trigger
from dagster_project.policy import DispatchPolicy
from dagster_project.providers import OutboxProvider, Provider
from dagster_project.rendering import Renderer
from dagster_project.runs import TriggerSummary
from dagster_project.warehouse import locked_warehouse
from tests.support.factories import CART_SPEC

API_KEY = "SG.crash-test-key"
POSTMARK_TOKEN = "pm-crash-test-token"
RESEND_KEY = "re_crash_test_key"
# The default of the esp resource: a crash leaves at most this many requests in doubt.
CONCURRENCY = 8


def build(name: str, url: str, outbox: Path, *, concurrency: int = CONCURRENCY) -> Provider:
    tuning = {"timeout": 5.0, "max_concurrency": concurrency, "max_attempts": 2}
    if name == "outbox":
        return OutboxProvider(outbox)
    if name == "sendgrid":
        from dagster_project.providers.sendgrid import SendGridProvider

        return SendGridProvider(API_KEY, url, **tuning)
    if name == "postmark":
        from dagster_project.providers.postmark import PostmarkProvider

        return PostmarkProvider(POSTMARK_TOKEN, url, **tuning)
    if name == "resend":
        from dagster_project.providers.resend import ResendProvider

        return ResendProvider(RESEND_KEY, url, requests_per_second=1000, **tuning)
    raise ValueError(name)


def settings_for(warehouse: str, state_dir: Path, password: str = "") -> Settings:
    """A DuckDB file's path, or a postgresql:// URL whose local files go to ``state_dir``."""
    postgres = postgres_from_url(warehouse, password)
    if postgres is None:
        return Settings(warehouse=Path(warehouse))
    postgres = dataclasses.replace(postgres, state_dir=state_dir)
    return Settings(warehouse=postgres.local_name, postgres=postgres)


def push(
    settings: Settings,
    provider: Provider,
    *,
    as_of: str,
    run_id: str,
    batch_size: int,
    settle_every: int | None = None,
) -> TriggerSummary:
    """Push the carts; answered batches are settled ``settle_every`` sends at a time (default:
    each batch on its own, so ``mid_settle:N`` is the settle of batch N)."""
    try:
        with locked_warehouse(settings) as con:
            return dispatch_trigger(
                con,
                CART_SPEC,
                provider=provider,
                renderer=Renderer(),
                as_of=parse_as_of(as_of),
                run_id=run_id,
                from_email="shop@example.com",
                policy=DispatchPolicy(
                    batch_size=batch_size, settle_every=settle_every or batch_size
                ),
            )
    finally:
        provider.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", required=True, help="a DuckDB file or postgresql:// URL")
    parser.add_argument("--state-dir", type=Path, default=Path("state"))
    parser.add_argument("--provider", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--outbox", type=Path, default=Path("outbox"))
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--settle-every", type=int)
    args = parser.parse_args()
    provider = build(args.provider, args.url, args.outbox, concurrency=args.concurrency)
    settings = settings_for(
        args.warehouse, args.state_dir, os.environ.get(POSTGRES_PASSWORD_VAR, "")
    )
    summary = push(
        settings,
        provider,
        as_of=args.as_of,
        run_id=args.run_id,
        batch_size=args.batch_size,
        settle_every=args.settle_every,
    )
    print(f"sent {summary.sent}")


if __name__ == "__main__":
    main()
