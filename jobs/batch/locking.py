"""One job at a time per output directory: an advisory ``flock`` on ``OUT/_job/lock``.

The kernel releases a ``flock`` when its process dies, however it dies (``kill -9``
included), so a crashed job never leaves a stale lock behind; the pid/host/start written
into the file are only there to tell the next caller who holds it.  Cron can therefore
start a scheduled run while the previous one is still going: the second one sees
:class:`LockHeld` and leaves.  (On network filesystems ``flock`` works where the NFS
client forwards locks -- NFSv4 does; see docs/scale-out.md.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)


class LockHeld(HmrflowError):
    """Another live process holds the lock; ``holder`` is what it wrote (pid, host, since)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = holder.get("since")
        when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
        what = f" ({holder['what']})" if holder.get("what") else ""
        super().__init__(f"{path}: another job is running on this output directory: {who}{when}{what}")


class JobLock:
    """Exclusive, non-blocking lock on a file; use as a context manager.

    what: a short description written into the lock file (e.g. the command).
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def read_holder(self) -> dict[str, Any]:
        """What the current holder wrote ({} when unreadable)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "JobLock":
        """Take the lock or raise :class:`LockHeld` at once (never waits)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.path, self.read_holder()) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        log.debug("locked %s", self.path)
        return self

    def release(self) -> None:
        """Release the lock (the file stays; its content is cleared)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
