"""Supervised worker process: runs one video at a time and can be killed when it hangs.

A decoder stuck in C code (holding the GIL) cannot be interrupted from Python; only a
process kill stops it.  So batch jobs run their per-video work in a child interpreter
(``python -m hmrflow.pipeline.worker``, a fresh process: no fork of a threaded parent, no
re-import of the caller's ``__main__``) that

* receives a picklable *handler* once (an object with ``setup()`` and
  ``handle(request, beat) -> result``) and calls ``setup()`` once (weights, devices);
* then serves requests one at a time; the handler calls ``beat(n)`` whenever it makes
  progress (a decoded batch of ``n`` frames) and the parent forwards it to ``on_beat``;
* dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and EOF on its pipe elsewhere).

The parent (:class:`IsolatedWorker`) waits for each answer with two limits: the *stall*
timeout (no beat for this long) and an optional *total* timeout per request.  On either,
or when the child dies (segfault, out-of-memory kill), the child is killed, the request
fails with :class:`WorkerTimeout` / :class:`WorkerCrashed`, and the next request starts a
fresh child.  Exceptions raised by the handler come back as :class:`RemoteError` (one
line) and leave the child running.

Messages are pickles over two OS pipes (:class:`multiprocessing.connection.Connection`);
the child's own stdout is redirected to stderr so library output cannot corrupt them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Protocol

from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)


class Handler(Protocol):
    """What a worker process runs: set up once, then handle requests."""

    def setup(self) -> None: ...

    def handle(self, request: Any, beat: Callable[[int], None]) -> Any: ...


class WorkerError(Exception):
    """A request could not be completed by the worker process."""


class WorkerTimeout(WorkerError):
    """The worker made no progress for too long and was killed."""


class WorkerCrashed(WorkerError):
    """The worker process died while handling a request (signal, out of memory, ...)."""


class RemoteError(WorkerError):
    """The handler raised; ``str()`` is ``Type: message`` and ``remote_traceback`` the rest."""

    def __init__(self, line: str, remote_traceback: str = "") -> None:
        super().__init__(line)
        self.remote_traceback = remote_traceback


class WorkerSetupError(HmrflowError):
    """The handler's ``setup()`` failed in the worker (models missing, bad config...): a job-level error."""


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024.0 if sys.platform != "darwin" else ru / (1024.0 * 1024.0)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


def _child_main(fd_in: int, fd_out: int) -> int:
    """Body of the worker process (see module docstring)."""
    _die_with_parent()
    parent = os.getppid()
    out = Connection(os.dup(fd_out), readable=False)
    os.close(fd_out)
    os.dup2(2, 1)  # stray prints go to stderr, never into the message pipe
    inp = Connection(fd_in, writable=False)
    if os.getppid() != parent:  # parent died before prctl took effect
        return 1
    try:
        handler = pickle.loads(inp.recv_bytes())
        handler.setup()
    except BaseException as exc:  # report and exit: the parent raises WorkerSetupError
        out.send(("setup_error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return 2
    out.send(("ready", os.getpid()))

    def beat(n: int = 0) -> None:
        out.send(("beat", int(n)))

    while True:
        try:
            request = inp.recv()
        except (EOFError, OSError):
            return 0
        if request is None:
            return 0
        try:
            result = handler.handle(request, beat)
        except Exception as exc:  # one bad request must not end the worker
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            out.send(("error", line, traceback.format_exc()))
            continue
        out.send(("ok", result, peak_rss_mb()))


class IsolatedWorker:
    """Parent side: start a worker process for ``handler`` and send it requests.

    handler: picklable object with ``setup()`` and ``handle(request, beat)``.
    stall_timeout_s: kill the worker when no beat (nor answer) arrives for this long.
    setup_timeout_s: limit for starting the interpreter and ``setup()``.
    env: extra environment variables for the child.
    """

    def __init__(
        self,
        handler: Any,
        stall_timeout_s: float = 600.0,
        setup_timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self._payload = pickle.dumps(handler, protocol=pickle.HIGHEST_PROTOCOL)
        self.stall_timeout_s = float(stall_timeout_s)
        self.setup_timeout_s = float(setup_timeout_s)
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self.starts = 0
        #: peak RSS (MiB) the worker reported with its last answer.
        self.last_peak_rss_mb = 0.0

    # ---------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the child and wait until its ``setup()`` is done."""
        if self.alive():
            return
        self.close()
        p_in_r, p_in_w = os.pipe()  # parent -> child
        p_out_r, p_out_w = os.pipe()  # child -> parent
        env = dict(os.environ)
        paths = [p for p in sys.path if p]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.update(self.env)
        cmd = [sys.executable, "-m", "hmrflow.pipeline.worker", str(p_in_r), str(p_out_w)]
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=(p_in_r, p_out_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(p_in_r)
            os.close(p_out_w)
        self._send = Connection(p_in_w, readable=False)
        self._recv = Connection(p_out_r, writable=False)
        self.starts += 1
        self._send.send_bytes(self._payload)
        msg = self._wait(self.setup_timeout_s, None, setup=True)
        if msg[0] == "setup_error":
            self.close()
            raise WorkerSetupError(f"worker setup failed: {msg[1]}")
        log.debug("worker %s ready", self.pid)

    def close(self) -> None:
        """Stop the child (politely, then SIGKILL) and release the pipes."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                if self._send is not None:
                    self._send.send(None)
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()
        for conn in (self._send, self._recv):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self._proc = self._send = self._recv = None

    def kill(self) -> None:
        """SIGKILL the child (no clean-up in it; outputs are atomic anyway)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                log.warning("worker %s did not exit after SIGKILL", proc.pid)

    def __enter__(self) -> "IsolatedWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- requests
    def call(
        self,
        request: Any,
        on_beat: Callable[[int], None] | None = None,
        total_timeout_s: float | None = None,
    ) -> Any:
        """Send one request and return the handler's result.

        Raises :class:`RemoteError` (handler raised; worker kept), :class:`WorkerTimeout`
        (stall or total timeout; worker killed), :class:`WorkerCrashed` (worker died).
        """
        self.start()
        assert self._send is not None
        try:
            self._send.send(request)
        except OSError as exc:
            self._reap()
            raise WorkerCrashed(f"worker process died before the request was sent ({exc})") from None
        msg = self._wait(self.stall_timeout_s, total_timeout_s, on_beat=on_beat)
        if msg[0] == "ok":
            self.last_peak_rss_mb = float(msg[2])
            return msg[1]
        if msg[0] == "error":
            raise RemoteError(msg[1], msg[2])
        raise WorkerCrashed(f"unexpected message from worker: {msg[0]!r}")  # pragma: no cover

    def _reap(self) -> str:
        """Kill/collect a dead or stuck child; returns how it ended."""
        proc = self._proc
        code = proc.poll() if proc is not None else None
        self.kill()
        if proc is not None and code is None:
            code = proc.returncode
        self.close()
        if code is not None and code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def _wait(
        self,
        stall_s: float,
        total_s: float | None,
        on_beat: Callable[[int], None] | None = None,
        setup: bool = False,
    ) -> tuple[Any, ...]:
        """Wait for the next non-beat message, enforcing the stall and total limits."""
        assert self._recv is not None
        t0 = time.monotonic()
        last = t0
        while True:
            now = time.monotonic()
            budget = stall_s - (now - last)
            if total_s is not None:
                budget = min(budget, total_s - (now - t0))
            if budget <= 0:
                stalled = total_s is None or (now - last) >= stall_s
                self._reap()
                if setup:
                    raise WorkerSetupError(f"worker setup did not finish within {stall_s:.0f} s")
                if stalled:
                    raise WorkerTimeout(f"timed out: no progress for {stall_s:.0f} s (decoder or stage hung)")
                raise WorkerTimeout(f"timed out: video took longer than {total_s:.0f} s")
            try:
                ready = self._recv.poll(min(budget, 1.0))
            except (OSError, EOFError):
                ready = True
            if not ready:
                if self._proc is not None and self._proc.poll() is not None and not self._recv.poll(0):
                    how = self._reap()
                    raise (WorkerSetupError if setup else WorkerCrashed)(f"worker process died ({how})")
                continue
            try:
                msg = self._recv.recv()
            except (EOFError, OSError):
                how = self._reap()
                raise (WorkerSetupError if setup else WorkerCrashed)(f"worker process died ({how})") from None
            if msg[0] == "beat":
                last = time.monotonic()
                if on_beat is not None and msg[1]:
                    on_beat(int(msg[1]))
                continue
            return msg


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hmrflow.pipeline.worker FD_IN FD_OUT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _child_main(int(argv[0]), int(argv[1]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
