"""Job ledger: one SQLite row per video of a batch job, kept in the output directory.

The ledger makes a batch job resumable and auditable.  Every video has a row with its
``status`` (``queued`` -> ``running`` -> ``done`` | ``failed``), ``attempts``, the last
``error``, the input's fingerprint (size, mtime) and sha256, the config hash, timings and
counts; an ``events`` table keeps the history (started, done, failed, interrupted, requeued)
so "every video done exactly once" can be checked afterwards.

Crash safety comes from SQLite itself: every change is one committed transaction in WAL
mode with ``synchronous=FULL``, so a ``kill -9`` at any moment leaves the ledger at the last
committed change.  The outputs are written atomically *before* a row becomes ``done``, so
a row is ``done`` only if its output is complete; a video whose output was written but
whose row was not yet updated is simply redone (same bytes) on the next run.

Resuming (:meth:`Ledger.plan`): ``done`` rows are skipped while their input, config hash
and output are unchanged; ``failed`` rows are retried until ``max_attempts``; ``running``
rows left by a killed run are requeued; new inputs are added as ``queued``.  Only one job
may write a ledger at a time (see :mod:`hmrflow.jobs.batch.locking`).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hmrflow.pipeline.provenance import cached_file_sha256

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATUSES = (QUEUED, RUNNING, DONE, FAILED)
SCHEMA_VERSION = 1
#: Manifest file whose presence marks a complete output folder.
OUTPUT_MARKER = "manifest.json"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    video_id       TEXT PRIMARY KEY,
    path           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT NOT NULL DEFAULT '',
    input_size     INTEGER NOT NULL DEFAULT -1,
    input_mtime_ns INTEGER NOT NULL DEFAULT -1,
    input_hash     TEXT NOT NULL DEFAULT '',
    config_hash    TEXT NOT NULL DEFAULT '',
    run_id         TEXT NOT NULL DEFAULT '',
    queued_at      REAL,
    started_at     REAL,
    finished_at    REAL,
    seconds        REAL NOT NULL DEFAULT 0,
    frames         INTEGER NOT NULL DEFAULT 0,
    tracks         INTEGER NOT NULL DEFAULT 0,
    people         INTEGER NOT NULL DEFAULT 0,
    rows_written   INTEGER NOT NULL DEFAULT 0,
    observed       INTEGER NOT NULL DEFAULT 0,
    filled         INTEGER NOT NULL DEFAULT 0,
    peak_rss_mb    REAL NOT NULL DEFAULT 0,
    output         TEXT NOT NULL DEFAULT '',
    metadata       TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    event    TEXT NOT NULL,
    at       REAL NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_video ON events (video_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    info        TEXT NOT NULL DEFAULT '{{}}',
    summary     TEXT NOT NULL DEFAULT '{{}}'
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


@dataclass(frozen=True)
class LedgerEntry:
    """One ``videos`` row (see the module docstring); ``metadata`` decoded from JSON."""

    video_id: str
    path: str
    status: str
    attempts: int = 0
    error: str = ""
    input_size: int = -1
    input_mtime_ns: int = -1
    input_hash: str = ""
    config_hash: str = ""
    run_id: str = ""
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float = 0.0
    frames: int = 0
    tracks: int = 0
    people: int = 0
    rows_written: int = 0
    observed: int = 0
    filled: int = 0
    peak_rss_mb: float = 0.0
    output: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


_COLUMNS = tuple(f.name for f in fields(LedgerEntry))


@dataclass(frozen=True)
class PlannedInput:
    """An input to plan: id, path and per-video metadata (JSON-able).

    config_hash: this video's own hash when it differs from the job's (a per-video time
    window), so that changing it redoes the video; None = the job's.
    """

    video_id: str
    path: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str | None = None


@dataclass(frozen=True)
class Plan:
    """What :meth:`Ledger.plan` decided for the given inputs.

    todo: ids to process now (queued), in input order.
    skipped: ids already done with the same input and config.
    given_up: ids that failed ``max_attempts`` times (left failed).
    requeued: ids that were running in a killed run, or done with another input/config.
    """

    todo: list[str]
    skipped: list[str]
    given_up: list[str]
    requeued: list[str]


def fingerprint(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, mtime_ns) of a file; (-1, -1) when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return int(st.st_size), int(st.st_mtime_ns)


class Ledger:
    """The SQLite ledger of one output directory (see module docstring).

    path: the database file (created with its schema when absent).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        version = int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: ledger schema version {version}, this hmrflow reads {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ basics
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run statements in one committed transaction."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                cur.execute(sql, params)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    @staticmethod
    def _entry(row: sqlite3.Row) -> LedgerEntry:
        data = {k: row[k] for k in _COLUMNS}
        try:
            data["metadata"] = json.loads(data["metadata"] or "{}")
        except ValueError:
            data["metadata"] = {}
        return LedgerEntry(**data)

    def get(self, video_id: str) -> LedgerEntry | None:
        row = self._db.execute("SELECT * FROM videos WHERE video_id = ?", (video_id,)).fetchone()
        return self._entry(row) if row is not None else None

    def entries(self, video_ids: Sequence[str] | None = None) -> list[LedgerEntry]:
        """Rows (all, or those of ``video_ids`` in that order)."""
        if video_ids is None:
            return [self._entry(r) for r in self._db.execute("SELECT * FROM videos ORDER BY video_id")]
        out = []
        for vid in video_ids:
            e = self.get(vid)
            if e is not None:
                out.append(e)
        return out

    def counts(self, video_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Number of rows per status (every status present, 0 when none)."""
        result = {s: 0 for s in STATUSES}
        for e in self.entries(video_ids):
            result[e.status] += 1
        return result

    def events(self, video_id: str | None = None) -> list[dict[str, Any]]:
        """History rows (seq, video_id, run_id, event, at, detail), oldest first."""
        if video_id is None:
            rows = self._db.execute("SELECT * FROM events ORDER BY seq")
        else:
            rows = self._db.execute("SELECT * FROM events WHERE video_id = ? ORDER BY seq", (video_id,))
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------- runs
    def start_run(self, run_id: str, info: Mapping[str, Any]) -> None:
        self._tx(
            [
                (
                    "INSERT OR REPLACE INTO runs (run_id, started_at, info) VALUES (?, ?, ?)",
                    (run_id, time.time(), json.dumps(dict(info), sort_keys=True, default=str)),
                )
            ]
        )

    def finish_run(self, run_id: str, summary: Mapping[str, Any]) -> None:
        self._tx(
            [
                (
                    "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?",
                    (time.time(), json.dumps(dict(summary), sort_keys=True, default=str), run_id),
                )
            ]
        )

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for r in self._db.execute("SELECT * FROM runs ORDER BY started_at"):
            d = dict(r)
            d["info"], d["summary"] = json.loads(d["info"]), json.loads(d["summary"])
            out.append(d)
        return out

    # --------------------------------------------------------------- planning
    def _done_still_valid(self, e: LedgerEntry, path: str, config_hash: str) -> str:
        """'' when a done row can be skipped, else why it must be redone."""
        if e.config_hash != config_hash:
            return f"config changed ({e.config_hash} -> {config_hash})"
        if os.path.abspath(e.path) != os.path.abspath(path):
            return f"input path changed ({e.path} -> {path})"
        if not e.output or not (Path(e.output) / OUTPUT_MARKER).is_file():
            return "output missing"
        size, mtime = fingerprint(path)
        if size < 0:
            return "input missing"
        if (size, mtime) == (e.input_size, e.input_mtime_ns):
            return ""
        if e.input_hash and cached_file_sha256(path) == e.input_hash:
            self._tx(
                [("UPDATE videos SET input_size = ?, input_mtime_ns = ? WHERE video_id = ?", (size, mtime, e.video_id))]
            )
            return ""
        return "input changed"

    def plan(
        self,
        inputs: Sequence[PlannedInput],
        config_hash: str,
        max_attempts: int,
        run_id: str,
    ) -> Plan:
        """Add new inputs, requeue stale/changed rows and say what to run (see module docstring).

        Rows of videos not in ``inputs`` are left alone.  ``max_attempts`` counts every
        start of a video (a video killed mid-run counts too).
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        todo: list[str] = []
        skipped: list[str] = []
        given_up: list[str] = []
        requeued: list[str] = []
        now = time.time()
        stmts: list[tuple[str, Sequence[Any]]] = []
        for item in inputs:
            row_hash = item.config_hash or config_hash  # a per-video window has its own
            meta = json.dumps(dict(item.metadata), sort_keys=True, default=str)
            e = self.get(item.video_id)
            if e is None:
                stmts.append(
                    (
                        "INSERT INTO videos (video_id, path, status, config_hash, queued_at, metadata, run_id) "
                        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                        (item.video_id, str(item.path), row_hash, now, meta, run_id),
                    )
                )
                stmts.append(
                    (
                        "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, 'queued', ?, '')",
                        (item.video_id, run_id, now),
                    )
                )
                todo.append(item.video_id)
                continue
            reason = ""
            reset_attempts = False
            if e.status == DONE:
                reason = self._done_still_valid(e, str(item.path), row_hash)
                if not reason:
                    skipped.append(item.video_id)
                    continue
                reset_attempts = True
            elif e.status == RUNNING:
                reason = "interrupted (was running when a previous run stopped)"
            elif e.status == FAILED:
                if e.config_hash != row_hash or os.path.abspath(e.path) != os.path.abspath(str(item.path)):
                    reset_attempts = True
                    reason = "config or input changed since it failed"
                elif e.attempts >= max_attempts:
                    given_up.append(item.video_id)
                    continue
                else:
                    reason = f"retry after failure ({e.attempts}/{max_attempts} attempts used)"
            if reason:
                requeued.append(item.video_id)
                stmts.append(
                    (
                        "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, ?, ?, ?)",
                        (item.video_id, run_id, "interrupted" if e.status == RUNNING else "requeued", now, reason),
                    )
                )
            stmts.append(
                (
                    "UPDATE videos SET status = 'queued', path = ?, config_hash = ?, metadata = ?, queued_at = ?, "
                    "attempts = CASE WHEN ? THEN 0 ELSE attempts END WHERE video_id = ?",
                    (str(item.path), row_hash, meta, now, int(reset_attempts), item.video_id),
                )
            )
            todo.append(item.video_id)
        if stmts:
            self._tx(stmts)
        return Plan(todo=todo, skipped=skipped, given_up=given_up, requeued=requeued)

    # ------------------------------------------------------------ transitions
    def mark_running(self, video_id: str, run_id: str) -> int:
        """queued -> running, one more attempt; returns the attempt number."""
        now = time.time()
        self._tx(
            [
                (
                    "UPDATE videos SET status = 'running', attempts = attempts + 1, run_id = ?, started_at = ?, "
                    "finished_at = NULL, error = '' WHERE video_id = ?",
                    (run_id, now, video_id),
                ),
                (
                    "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, 'started', ?, '')",
                    (video_id, run_id, now),
                ),
            ]
        )
        e = self.get(video_id)
        if e is None:
            raise KeyError(f"{video_id}: not in the ledger {self.path}")
        return e.attempts

    def mark_done(self, video_id: str, run_id: str, outcome: Mapping[str, Any]) -> bool:
        """running -> done with the outcome's counts (see ``VideoOutcome``).

        Idempotent: a second report for a row that is already done is ignored (returns False),
        so a task that a fault-tolerant runner executed twice is recorded once.
        """
        e = self.get(video_id)
        if e is None:
            raise KeyError(f"{video_id}: not in the ledger {self.path}")
        if e.status == DONE:
            log.debug("%s: already done, duplicate report ignored", video_id)
            return False
        size, mtime = fingerprint(e.path)
        now = time.time()
        self._tx(
            [
                (
                    "UPDATE videos SET status = 'done', error = '', finished_at = ?, seconds = ?, frames = ?, tracks = ?, "
                    "people = ?, rows_written = ?, observed = ?, filled = ?, peak_rss_mb = ?, output = ?, input_hash = ?, "
                    "input_size = ?, input_mtime_ns = ? WHERE video_id = ?",
                    (
                        now,
                        float(outcome.get("seconds", 0.0)),
                        int(outcome.get("frames", 0)),
                        int(outcome.get("tracks", 0)),
                        int(outcome.get("people", 0)),
                        int(outcome.get("rows", 0)),
                        int(outcome.get("observed", 0)),
                        int(outcome.get("filled", 0)),
                        float(outcome.get("peak_rss_mb", 0.0)),
                        str(outcome.get("output", "")),
                        str(outcome.get("input_sha256", "")),
                        size,
                        mtime,
                        video_id,
                    ),
                ),
                (
                    "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, 'done', ?, ?)",
                    (video_id, run_id, now, str(outcome.get("output", ""))),
                ),
            ]
        )
        return True

    def mark_failed(self, video_id: str, run_id: str, error: str, seconds: float = 0.0) -> None:
        """running -> failed with a one-line reason."""
        now = time.time()
        line = (error or "unknown error").strip().splitlines()[0][:2000]
        self._tx(
            [
                (
                    "UPDATE videos SET status = 'failed', error = ?, finished_at = ?, seconds = ? WHERE video_id = ?",
                    (line, now, float(seconds), video_id),
                ),
                (
                    "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, 'failed', ?, ?)",
                    (video_id, run_id, now, line),
                ),
            ]
        )

    def requeue(self, video_ids: Sequence[str], run_id: str, reason: str) -> None:
        """running -> queued (work lost, e.g. a crashed Ray pass); attempts are kept."""
        now = time.time()
        stmts: list[tuple[str, Sequence[Any]]] = []
        for vid in video_ids:
            stmts.append(("UPDATE videos SET status = 'queued' WHERE video_id = ? AND status = 'running'", (vid,)))
            stmts.append(
                (
                    "INSERT INTO events (video_id, run_id, event, at, detail) VALUES (?, ?, 'requeued', ?, ?)",
                    (vid, run_id, now, reason),
                )
            )
        if stmts:
            self._tx(stmts)

    def done_count_per_video(self) -> dict[str, int]:
        """How many 'done' events each video has (1 everywhere = each done exactly once)."""
        rows = self._db.execute("SELECT video_id, COUNT(*) AS n FROM events WHERE event = 'done' GROUP BY video_id")
        return {r["video_id"]: int(r["n"]) for r in rows}
