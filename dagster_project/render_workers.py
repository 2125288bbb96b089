"""Rendering a big push in worker processes, beside the send step's own process.

Rendering is pure CPU under one interpreter lock: on a push of thousands of emails it took
three quarters of the send step's time, and the provider's thread (building and posting the
requests) waited for the same lock. :class:`RenderWorkers` starts a few child processes
(``python -m dagster_project.render_workers``), each with its own :class:`Renderer`, and splits
every batch between them; the send step sends, settles and re-checks consent meanwhile.

Why it cannot send twice or lose a send: a worker runs :func:`compose.render_batch` and
nothing else. It opens no warehouse, writes no ledger row and sends nothing; the ledger, the
consent re-check, the hand-over journal and the provider stay in the send step's process,
exactly as without workers, so a crash anywhere is resumed as before. A worker that dies or
answers nonsense makes :class:`WorkersBroken`, and the push renders in its own process from
then on (rendering twice is harmless: it is pure).

Why children over a pipe, not :mod:`multiprocessing`: a ``fork`` inside a threaded Dagster run
can deadlock the child and hands it the warehouse's file lock; ``spawn`` and ``forkserver``
re-import the parent's ``__main__`` (Dagster's whole CLI) in every worker. A child started
with ``-m`` imports only what rendering needs (about 0.3 s), and reads its requests from
stdin, so it exits as soon as the parent is gone, even after a SIGKILL. Requests carry the
link secret through that pipe, never through the command line or the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .compose import Rendered, render_batch
from .links import LinkSettings
from .rendering import Renderer
from .triggers import TriggerSpec

log = logging.getLogger(__name__)

# Below this many emails in a push, a worker's start-up costs more than it saves: one process
# renders about 6,000 emails a second.
MIN_SENDS = 1000


class WorkersBroken(Exception):
    """A worker died or answered nonsense; render in the send step's own process instead."""


@dataclass(frozen=True)
class Job:
    """What a worker needs to render a slice of a batch: the arguments of ``render_batch``."""

    spec: TriggerSpec
    templates_dir: Path
    batch: Sequence[tuple[str, str]]
    from_email: str
    links: LinkSettings | None
    max_message_bytes: int | None


class RenderWorkers:
    """``processes`` rendering children, started at once and closed on exit (a context manager).

    :meth:`render` has ``render_batch``'s result, in the batch's order.
    """

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("RenderWorkers needs at least one process")
        env = dict(os.environ)
        # The child imports dagster_project from where this process found it, installed or not.
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._children: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(processes):
                self._children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "dagster_project.render_workers"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                        close_fds=True,
                    )
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RenderWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def render(
        self,
        spec: TriggerSpec,
        renderer: Renderer,
        batch: Sequence[tuple[str, str]],
        from_email: str,
        *,
        links: LinkSettings | None = None,
        max_message_bytes: int | None = None,
    ) -> Rendered:
        """Render ``batch`` as :func:`compose.render_batch` would, split across the workers."""
        size = -(-len(batch) // len(self._children))  # ceiling: every worker gets a slice
        slices = [batch[i : i + size] for i in range(0, len(batch), size)]
        busy = self._children[: len(slices)]
        try:
            # All requests first, then the answers: the workers render at the same time.
            for child, part in zip(busy, slices, strict=True):
                job = Job(spec, renderer.templates_dir, part, from_email, links, max_message_bytes)
                _send_frame(_pipe(child.stdin), job)
            answers = [_read_frame(_pipe(child.stdout)) for child in busy]
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise WorkersBroken(f"a render worker is gone: {type(exc).__name__}: {exc}") from exc
        rendered: Rendered = ([], [])
        for answer in answers:
            if not (isinstance(answer, tuple) and len(answer) == 2):
                raise WorkersBroken(f"a render worker answered {type(answer).__name__}")
            kind, value = answer
            if kind == "error":
                # A bug, as it would have been raised in this process.
                raise RuntimeError(f"a render worker failed: {value}")
            rendered[0].extend(value[0])
            rendered[1].extend(value[1])
        return rendered

    def close(self) -> None:
        """Close the workers' stdin (they exit) and wait; kill one that does not go."""
        for child in self._children:
            if child.stdin is not None:
                with contextlib.suppress(OSError):  # already broken: it is gone
                    child.stdin.close()
        for child in self._children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        self._children = []


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise WorkersBroken("a render worker has no pipe")
    return stream


def _send_frame(stream: IO[bytes], value: Any) -> None:
    pickle.dump(value, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    return pickle.load(stream)


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """A worker's loop: one :class:`Job` in, one ``("ok", rendered)`` or ``("error", why)``
    out, until its parent closes the pipe."""
    renderers: dict[Path, Renderer] = {}
    while True:
        try:
            job = _read_frame(requests)
        except EOFError:
            return
        try:
            renderer = renderers.get(job.templates_dir)
            if renderer is None:
                renderer = renderers[job.templates_dir] = Renderer(job.templates_dir)
            answer: tuple[str, Any] = (
                "ok",
                render_batch(
                    job.spec,
                    renderer,
                    job.batch,
                    job.from_email,
                    links=job.links,
                    max_message_bytes=job.max_message_bytes,
                ),
            )
        except Exception as exc:  # handed back: the parent raises it as its own
            answer = ("error", f"{type(exc).__name__}: {exc}")
        _send_frame(answers, answer)


def main() -> None:
    # The answers get stdout's pipe to themselves; anything printed goes to stderr instead,
    # where it cannot corrupt a frame.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # BrokenPipeError: the parent is gone, nothing to answer (SIGINT reaches the whole group).
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
