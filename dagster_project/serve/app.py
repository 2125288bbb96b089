"""The consent service's ASGI app (Starlette; ``nudge serve`` runs it under uvicorn).

Routes:

* ``GET /healthz``: the landing store answers (for load balancers).
* ``GET /u/TOKEN``: the preference page behind every unsubscribe link. Changes nothing.
* ``POST /u/TOKEN``: body ``List-Unsubscribe=One-Click`` (RFC 8058: urlencoded or multipart,
  no cookies) unsubscribes at once and answers 200 with no redirect; the page's own buttons
  (``action=unsubscribe`` / ``resubscribe``) do the same with source ``preference_page``.
* ``GET /confirm/TOKEN`` and ``POST /confirm/TOKEN``: double opt-in.
* ``POST /webhooks/PROVIDER``: provider event webhooks (sendgrid, postmark, ses, resend, and
  ``webhook`` for nudge's own gateway format), each verified the provider's way
  (``webhooks/``); 200 with ``{"received", "new", "ignored"}`` once the events are fsynced.

An answer that says a change was made is sent only after the change is fsynced in the landing
store. Bad tokens get a 400 page and change nothing; bodies over ``max_body_bytes`` (pages) or
``max_webhook_bytes`` (webhooks: a provider's batch) get 413; a webhook that fails its
signature or credentials gets 401/403 and stores nothing; logs name the route, never the token
(it identifies a person).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..landing import LandingStore
from ..links import Claim, InvalidToken, LinkSettings
from ..webhooks import PROVIDERS, Rejected, WebhookSettings, confirm_subscription, receive
from ..webhooks.sns import http_get
from . import pages

log = logging.getLogger("nudge.serve")

MAX_BODY_BYTES = 16 * 1024
# SendGrid posts up to a few hundred KB per batch; nothing a provider sends is near 1 MiB.
MAX_WEBHOOK_BYTES = 1024 * 1024
ONE_CLICK = ("List-Unsubscribe", "One-Click")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# Pages name no third party, run no script, and cannot be framed; the token in the URL must
# not leak through a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class Hardening:
    """ASGI middleware: body limit (413), security headers, and a masked access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_webhook_bytes: int = MAX_WEBHOOK_BYTES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_webhook_bytes = max_webhook_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = {"code": 0}
        headers = dict(scope.get("headers") or [])
        limit = (
            self.max_webhook_bytes
            if str(scope.get("path", "")).startswith("/webhooks/")
            else self.max_body_bytes
        )
        declared = headers.get(b"content-length", b"").strip() or None
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _plain(send, 413, "request body too large")
            _access(scope, 413, started)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except _TooLarge:
            if not status["code"]:
                await _plain(send, 413, "request body too large")
                status["code"] = 413
        finally:
            _access(scope, status["code"] or 500, started)


async def _plain(send: Send, code: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _access(scope: Scope, code: int, started: float) -> None:
    # The route, not the path: /u/<token> identifies a person.
    path = str(scope.get("path", ""))
    route = "/" + path.strip("/").split("/", 1)[0] if path.strip("/") else "/"
    if route in ("/u", "/confirm"):
        route += "/<token>"
    elif route == "/webhooks":
        # Only a provider nudge knows: the path is the client's, and a crafted one (a newline,
        # a forged second log line) must not reach the log.
        provider = path.strip("/").split("/", 1)[-1]
        route = f"/webhooks/{provider if provider in PROVIDERS else '<unknown>'}"
    log.info(
        "%s %s %d %.1f ms", scope.get("method"), route, code, (time.monotonic() - started) * 1000
    )


def create_app(
    links: LinkSettings,
    store: LandingStore,
    *,
    webhooks: WebhookSettings | None = None,
    fetch_certificate: Callable[[str], bytes] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_webhook_bytes: int = MAX_WEBHOOK_BYTES,
) -> ASGIApp:
    """The service for these link keys, this landing store and these webhook credentials
    (default: none configured, every webhook answers 503). ``fetch_certificate`` GETs SNS
    signing certificates and subscription URLs (default: httpx over verified TLS)."""
    webhook_settings = webhooks or WebhookSettings()
    fetch = fetch_certificate or http_get

    def claim_of(request: Request, kind: str) -> Claim | Response:
        try:
            claim = links.verify(request.path_params["token"])
        except InvalidToken as exc:
            if str(exc) == "expired":
                return HTMLResponse(pages.expired_link(), status_code=410)
            return HTMLResponse(pages.invalid_link(), status_code=400)
        if claim.kind != kind:
            return HTMLResponse(pages.invalid_link(), status_code=400)
        return claim

    async def form_of(request: Request) -> FormData | Response:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in FORM_TYPES:
            return PlainTextResponse(
                "expected a form body (application/x-www-form-urlencoded or "
                "multipart/form-data), e.g. List-Unsubscribe=One-Click",
                status_code=415,
            )
        try:
            # Read whole first (bounded by Hardening): a body over the limit is a 413 here,
            # before any parsing.
            await request.body()
        except _TooLarge:
            return PlainTextResponse("request body too large", status_code=413)
        try:
            return await request.form(max_files=0, max_fields=10)
        except Exception:  # malformed multipart, too many fields
            return PlainTextResponse("the form body could not be read", status_code=400)

    async def record(claim: Claim, status: str, source: str) -> None:
        await run_in_threadpool(
            store.record,
            customer_id=claim.customer_id,
            list_name=claim.list,
            status=status,
            source=source,
            send_id=claim.send_id,
        )

    async def healthz(request: Request) -> Response:
        await run_in_threadpool(store.changes_for, [""], ["_"])
        return JSONResponse({"status": "ok"})

    async def stylesheet(request: Request) -> Response:
        return Response(pages.STYLESHEET, media_type="text/css")

    async def unsubscribe_page(request: Request) -> Response:
        claim = claim_of(request, "unsubscribe")
        if isinstance(claim, Response):
            return claim
        latest = await run_in_threadpool(store.latest, claim.customer_id, claim.list)
        action = request.url.path
        if latest is not None and latest.status == "unsubscribed":
            return HTMLResponse(pages.unsubscribed(action, claim.list))
        return HTMLResponse(pages.unsubscribe(action, claim.list))

    async def unsubscribe_post(request: Request) -> Response:
        claim = claim_of(request, "unsubscribe")
        if isinstance(claim, Response):
            return claim
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        action = request.url.path
        if form.get(ONE_CLICK[0]) == ONE_CLICK[1]:
            await record(claim, "unsubscribed", "one_click")
            return PlainTextResponse("unsubscribed")
        choice = form.get("action")
        if choice == "unsubscribe":
            await record(claim, "unsubscribed", "preference_page")
            return HTMLResponse(pages.unsubscribed(action, claim.list))
        if choice == "resubscribe":
            await record(claim, "subscribed", "preference_page")
            return HTMLResponse(pages.resubscribed(action, claim.list))
        return PlainTextResponse(
            "expected List-Unsubscribe=One-Click (RFC 8058) or action=unsubscribe|resubscribe",
            status_code=400,
        )

    async def confirm_page(request: Request) -> Response:
        claim = claim_of(request, "confirm")
        if isinstance(claim, Response):
            return claim
        return HTMLResponse(pages.confirm(request.url.path, claim.list))

    async def confirm_post(request: Request) -> Response:
        claim = claim_of(request, "confirm")
        if isinstance(claim, Response):
            return claim
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        if form.get("action") != "confirm":
            return PlainTextResponse("expected action=confirm", status_code=400)
        await record(claim, "subscribed", "double_opt_in")
        return HTMLResponse(pages.confirmed(claim.list))

    async def webhook(request: Request) -> Response:
        provider = request.path_params["provider"]
        try:
            body = await request.body()
        except _TooLarge:
            return PlainTextResponse("request body too large", status_code=413)
        try:
            parsed = await run_in_threadpool(
                receive,
                provider,
                request.headers,
                body,
                webhook_settings,
                now=time.time(),
                fetch_certificate=fetch,
            )
        except Rejected as exc:
            headers = (
                {"WWW-Authenticate": 'Basic realm="nudge"'}
                if exc.status == 401 and provider == "postmark"
                else None
            )
            named = provider if provider in PROVIDERS else "<unknown>"
            log.warning("webhook %s refused: %d %s", named, exc.status, exc.reason)
            return PlainTextResponse(exc.reason, status_code=exc.status, headers=headers)
        if parsed.subscribe_url is not None:
            # SNS asks once per subscription; the topic ARN was checked against
            # NUDGE_SES_TOPIC_ARNS and the message signature verified before we get here.
            try:
                await run_in_threadpool(confirm_subscription, parsed.subscribe_url, fetch)
            except Exception as exc:  # SNS resends the confirmation: say why, ask again
                log.warning("SNS subscription not confirmed: %s", type(exc).__name__)
                return PlainTextResponse("subscription not confirmed", status_code=502)
            return JSONResponse({"confirmed": True})
        new = await run_in_threadpool(store.record_events, parsed.events)
        return JSONResponse({"received": len(parsed.events), "new": new, "ignored": parsed.ignored})

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/nudge.css", stylesheet, methods=["GET"]),
            Route("/u/{token}", unsubscribe_page, methods=["GET"]),
            Route("/u/{token}", unsubscribe_post, methods=["POST"]),
            Route("/confirm/{token}", confirm_page, methods=["GET"]),
            Route("/confirm/{token}", confirm_post, methods=["POST"]),
            Route("/webhooks/{provider}", webhook, methods=["POST"]),
        ]
    )
    return Hardening(app, max_body_bytes=max_body_bytes, max_webhook_bytes=max_webhook_bytes)
