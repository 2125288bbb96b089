"""The client every HTTP provider POSTs through (``providers/wire.py``: ``WireClient``).

It talks to the transport directly instead of through ``httpx.Client``, so what a client did
for free is tested here: keep-alive connections per worker, proxies from the environment with
``NO_PROXY`` exemptions, timeouts, and closing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from dagster_project.providers.postmark import PostmarkProvider
from dagster_project.providers.wire import WireClient
from tests.support.esp_server import EspServer
from tests.support.factories import make_message

TOKEN = "pm-wire-test-secret-0123456789abcdef"


class _ForwardProxy:
    """An HTTP forward proxy that answers itself: it records each request line and answers a
    Postmark batch with one success per message, as the provider behind it would."""

    def __init__(self) -> None:
        self.request_lines: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy.request_lines.append(self.requestline)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rows = [
                    {"ErrorCode": 0, "Message": "OK", "MessageID": f"m{i}"}
                    for i in range(len(body))
                ]
                answer = json.dumps(rows).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy() -> Iterator[_ForwardProxy]:
    started = _ForwardProxy()
    yield started
    started.stop()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Clear every proxy variable of this machine, then set the ones a test names."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_requests_go_through_the_proxy_the_environment_names(
    proxy: _ForwardProxy, no_proxy_env: Callable[..., None]
) -> None:
    # The provider's host does not resolve: only the proxy can have answered.
    no_proxy_env(HTTP_PROXY=proxy.url)
    with PostmarkProvider(TOKEN, "http://api.postmark.invalid") as provider:
        results = provider.send([make_message(1), make_message(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert proxy.request_lines == ["POST http://api.postmark.invalid/email/batch HTTP/1.1"]


def test_no_proxy_exempts_the_providers_host(
    proxy: _ForwardProxy,
    start_esp: Callable[..., EspServer],
    no_proxy_env: Callable[..., None],
) -> None:
    server = start_esp(api_key=TOKEN)
    no_proxy_env(HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1")
    with PostmarkProvider(TOKEN, server.url) as provider:
        results = provider.send([make_message(1)])
    assert [r.status for r in results] == ["sent"]
    assert proxy.request_lines == []
    assert len(server.requests) == 1


def test_each_worker_keeps_one_connection_open(
    start_esp: Callable[..., EspServer], no_proxy_env: Callable[..., None]
) -> None:
    no_proxy_env()
    server = start_esp(api_key=TOKEN)
    client = WireClient({"X-Postmark-Server-Token": TOKEN}, timeout=5)
    body = json.dumps(
        [{"From": "a@example.com", "To": "b@example.com", "Subject": "s", "TextBody": "t"}]
    ).encode()
    try:
        with ThreadPoolExecutor(2) as workers:
            answers = list(
                workers.map(
                    lambda _: client.post(
                        f"{server.url}/email/batch",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    ),
                    range(20),
                )
            )
    finally:
        client.close()
    assert {a.status_code for a in answers} == {200}
    # The whole answer was read before the connection went back to its worker.
    assert isinstance(answers[0].json(), list)
    # Twenty requests over at most two connections (one per worker), never one each.
    assert 1 <= len({r.client_port for r in server.requests}) <= 2


def test_a_server_that_does_not_answer_is_a_read_timeout(no_proxy_env: Callable[..., None]) -> None:
    no_proxy_env()
    silent = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    silent.RequestHandlerClass = type(
        "Silent", (BaseHTTPRequestHandler,), {"do_POST": lambda self: threading.Event().wait(2)}
    )
    thread = threading.Thread(target=silent.serve_forever, daemon=True)
    thread.start()
    client = WireClient({}, timeout=0.2)
    try:
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"http://127.0.0.1:{silent.server_address[1]}/x", content=b"{}")
    finally:
        client.close()
        silent.shutdown()
        silent.server_close()


def test_a_closed_client_sends_nothing(
    start_esp: Callable[..., EspServer], no_proxy_env: Callable[..., None]
) -> None:
    no_proxy_env()
    server = start_esp(api_key=TOKEN)
    client = WireClient({}, timeout=1)
    client.close()
    with pytest.raises(httpx.HTTPError):
        client.post(f"{server.url}/email/batch", content=b"[]")
    assert server.requests == []
