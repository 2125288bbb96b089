"""A fast local sink for throughput benchmarks: SendGrid, Postmark and Resend success answers.

:class:`~tests.support.esp_server.EspServer` is built for fault injection (scripts, recorded
requests, schema checks) on Python's thread-per-connection ``ThreadingHTTPServer``; under
thousands of requests a second *it* becomes the bottleneck, and a benchmark comparing two
clients on it measures the server, not the clients. This sink is one asyncio protocol in a
child process (its own GIL), with keep-alive HTTP/1.1, no recording and no faults: it answers
each dialect's success shape and counts what it accepted, so a benchmark can check that every
message arrived exactly once.

    with FastSink() as sink:
        ...  # post to sink.url
        sink.stats()  # {"requests": n, "messages": m, "distinct": d}
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import uuid
from types import TracebackType
from typing import Any

import httpx

_STATS = "/_stats"


def _answer(path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes, list[str]]:
    """(status, headers, body, the identities of the messages accepted) for one request."""
    payload: Any = json.loads(body) if body else None
    if path == "/v3/mail/send":
        # One identity per personalization: nudge's send_id, else the recipient (drt).
        ids = [
            (p.get("custom_args") or {}).get("send_id") or p["to"][0]["email"]
            for p in payload["personalizations"]
        ]
        return 202, [("X-Message-Id", uuid.uuid4().hex[:22])], b"", ids
    if path == "/email/batch":
        ids = [(m.get("Metadata") or {}).get("send_id") or m["To"] for m in payload]
        rows = [
            {"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()), "To": m["To"]}
            for m in payload
        ]
        return 200, [("Content-Type", "application/json")], json.dumps(rows).encode(), ids
    if path == "/emails/batch":
        ids = [
            {t["name"]: t["value"] for t in m.get("tags", [])}.get("send_id") or m["to"][0]
            for m in payload
        ]
        answer = {"data": [{"id": str(uuid.uuid4())} for _ in payload]}
        return 200, [("Content-Type", "application/json")], json.dumps(answer).encode(), ids
    return 404, [], b"", []


class _Protocol(asyncio.Protocol):
    def __init__(self, counts: dict[str, Any], delay: float) -> None:
        self.counts = counts
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self._respond(head[0].split(" ")[1], body)

    def _respond(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        if path == _STATS:
            status, headers, payload = 200, [("Content-Type", "application/json")], b""
            ids: set[str] = self.counts["ids"]
            payload = json.dumps(
                {
                    "requests": self.counts["requests"],
                    "messages": self.counts["messages"],
                    "distinct": len(ids),
                }
            ).encode()
        else:
            status, headers, payload, accepted = _answer(path, body)
            self.counts["requests"] += 1
            self.counts["messages"] += len(accepted)
            self.counts["ids"].update(accepted)
        lines = [f"HTTP/1.1 {status} OK", f"Content-Length: {len(payload)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        answer = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        if self.delay and path != _STATS:
            # A provider across the internet: the answer comes back after a round trip.
            asyncio.get_running_loop().call_later(self.delay, self.transport.write, answer)
        else:
            self.transport.write(answer)


def _serve(port: Any, ready: Any, delay: float) -> None:  # pragma: no cover - in the child
    async def main() -> None:
        counts: dict[str, Any] = {"requests": 0, "messages": 0, "ids": set()}
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Protocol(counts, delay), "127.0.0.1", 0, backlog=512
        )
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        await server.serve_forever()

    asyncio.run(main())


class FastSink:
    """The sink in a child process; ``url`` is its base URL, ``stats()`` its counts.

    ``delay``: seconds before each answer, as a provider across the internet would take
    (requests on one connection are still answered in order).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self._port = multiprocessing.Value("i", 0)
        self._ready = multiprocessing.Event()
        self._process = multiprocessing.Process(
            target=_serve, args=(self._port, self._ready, delay), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port.value}"

    def start(self) -> FastSink:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the sink did not start")
        return self

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(10)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.url + _STATS, timeout=10).json())

    def __enter__(self) -> FastSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
