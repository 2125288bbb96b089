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
answers nonsense (or for rows it was not given) makes :class:`WorkersBroken`: the workers are
killed and the push renders in its own process from then on (rendering twice is harmless: it
is pure).

Why children over a pipe, not :mod:`multiprocessing`: a ``fork`` inside a threaded Dagster run
can deadlock the child and hands it the warehouse's file lock; ``spawn`` and ``forkserver``
re-import the parent's ``__main__`` (Dagster's whole CLI) in every worker. A child started
with ``-m`` imports only what rendering needs (about 0.1 s), and reads its requests from
stdin, so it exits as soon as the parent is gone, even after a SIGKILL. Its environment keeps
none of the tick's secrets; the link secret travels inside each request, through that pipe,
never through the command line or the environment.
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

# Below this many emails in a push, a worker's start-up (about 0.12 s of CPU) costs more than it
# saves: one process renders up to 18,000 emails a second.
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


# What a worker's environment keeps of the send step's: enough to run Python and format text,
# none of the secrets (provider keys, the warehouse password, NUDGE_LINK_SECRET) a tick holds.
# The link secret a worker needs travels inside each job, through the pipe.
_ENV_KEPT = ("PATH", "HOME", "TZ", "LANG", "LANGUAGE", "TMPDIR")


class RenderWorkers:
    """``processes`` rendering children, started at once and closed on exit (a context manager).

    :meth:`render` has ``render_batch``'s result, in the batch's order. After any failure the
    workers are killed and every later call raises :class:`WorkersBroken`: an answer left
    unread in a pipe must never be taken for the next batch's.
    """

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("RenderWorkers needs at least one process")
        env = {
            name: value
            for name, value in os.environ.items()
            if name in _ENV_KEPT or name.startswith("LC_")
        }
        # The child imports dagster_project from where this process found it, installed or not;
        # -P keeps the working directory off its path, so no other copy can win.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        self._children: list[subprocess.Popen[bytes]] = []
        self._broken: str | None = None
        try:
            for _ in range(processes):
                self._children.append(
                    subprocess.Popen(
                        [sys.executable, "-P", "-m", "dagster_project.render_workers"],
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
        if self._broken is not None:
            raise WorkersBroken(self._broken)
        if not batch:
            return [], []
        size = -(-len(batch) // len(self._children))  # ceiling: every worker gets a slice
        slices = [batch[i : i + size] for i in range(0, len(batch), size)]
        busy = self._children[: len(slices)]
        try:
            # All requests first, then the answers: the workers render at the same time.
            for child, part in zip(busy, slices, strict=True):
                job = Job(spec, renderer.templates_dir, part, from_email, links, max_message_bytes)
                _send_frame(_pipe(child.stdin), job)
            answers = [_read_frame(_pipe(child.stdout)) for child in busy]
            rendered: Rendered = ([], [])
            for part, answer in zip(slices, answers, strict=True):
                messages, failures = _checked(part, answer)
                rendered[0].extend(messages)
                rendered[1].extend(failures)
            return rendered
        except _WorkerFailed as exc:
            # A bug, raised as it would have been in this process.
            self._break(str(exc))
            raise RuntimeError(f"a render worker failed: {exc}") from None
        except BaseException as exc:
            # Gone, nonsense, or interrupted (Ctrl-C, Dagster's termination) mid-answer: what
            # is left in the pipes belongs to no batch any more.
            self._break(f"a render worker is gone: {type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                raise WorkersBroken(self._broken) from exc
            raise

    def _break(self, why: str) -> None:
        self._broken = why
        self.close(wait=False)

    def close(self, *, wait: bool = True) -> None:
        """Close the workers' pipes (they exit) and wait for them; kill one that does not go.

        Both pipes: a worker blocked writing an answer nobody will read sees its stdout
        closed, rather than wait forever for a reader. ``wait=False`` kills them at once.
        """
        children, self._children = self._children, []
        try:
            for child in children:
                for pipe in (child.stdin, child.stdout):
                    if pipe is not None:
                        with contextlib.suppress(OSError):  # already broken: it is gone
                            pipe.close()
            if wait:
                for child in children:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(timeout=5)
        finally:
            # Whatever happened meanwhile (a second Ctrl-C), none of them outlives this.
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()


class _WorkerFailed(Exception):
    """A worker's render raised: its message, sent back through the pipe."""


def _checked(part: Sequence[tuple[str, str]], answer: Any) -> Rendered:
    """A worker's answer for ``part``, or an error: it must be for exactly that slice's rows."""
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise WorkersBroken(f"a render worker answered {type(answer).__name__}")
    kind, value = answer
    if kind == "error":
        raise _WorkerFailed(value)
    messages, failures = value
    answered = sorted([m.send_id for m in messages] + [f.send_id for f in failures])
    if kind != "ok" or answered != sorted(send_id for send_id, _ in part):
        raise WorkersBroken("a render worker answered for other rows than it was given")
    return messages, failures


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
    # BrokenPipeError: the parent is gone or closed the pipe, nothing to answer. SIGINT: a
    # Ctrl-C in a terminal reaches the whole process group; the parent decides what follows.
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
