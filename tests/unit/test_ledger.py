"""Job ledger (SQLite) and job lock: resume rules, idempotent outcomes, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hmrflow.jobs.batch.ledger import DONE, FAILED, QUEUED, RUNNING, Ledger, PlannedInput
from hmrflow.jobs.batch.locking import JobLock, LockHeld


def _video(tmp_path: Path, name: str, data: bytes = b"video-bytes") -> str:
    p = tmp_path / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p)


def _output(tmp_path: Path, vid: str) -> str:
    d = tmp_path / "out" / vid
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text("{}")
    return str(d)


def _finish(led: Ledger, tmp_path: Path, vid: str, run: str = "r1") -> None:
    led.mark_running(vid, run)
    led.mark_done(
        vid,
        run,
        {
            "output": _output(tmp_path, vid),
            "frames": 10,
            "tracks": 2,
            "people": 1,
            "rows": 20,
            "observed": 18,
            "filled": 2,
            "input_sha256": "",
            "seconds": 1.5,
        },
    )


def test_new_inputs_are_queued_then_done_is_skipped(tmp_path: Path) -> None:
    a, b = _video(tmp_path, "a.mp4"), _video(tmp_path, "b.mp4")
    with Ledger(tmp_path / "l.sqlite") as led:
        plan = led.plan([PlannedInput("a", a, {"site": "x"}), PlannedInput("b", b)], "cfg1", 3, "r1")
        assert plan.todo == ["a", "b"] and not plan.skipped
        assert led.get("a").status == QUEUED and led.get("a").metadata == {"site": "x"}
        assert led.mark_running("a", "r1") == 1
        assert led.get("a").status == RUNNING
        _output(tmp_path, "a")
        led.mark_done(
            "a",
            "r1",
            {
                "output": str(tmp_path / "out" / "a"),
                "frames": 10,
                "tracks": 2,
                "rows": 20,
                "observed": 18,
                "filled": 2,
                "seconds": 1.5,
            },
        )
        e = led.get("a")
        assert (e.status, e.frames, e.tracks, e.observed, e.filled, e.attempts) == (DONE, 10, 2, 18, 2, 1)
        plan2 = led.plan([PlannedInput("a", a), PlannedInput("b", b)], "cfg1", 3, "r2")
        assert plan2.skipped == ["a"] and plan2.todo == ["b"]
        assert led.counts() == {QUEUED: 1, RUNNING: 0, DONE: 1, FAILED: 0}


def test_running_rows_of_a_killed_run_are_redone(tmp_path: Path) -> None:
    a = _video(tmp_path, "a.mp4")
    with Ledger(tmp_path / "l.sqlite") as led:
        led.plan([PlannedInput("a", a)], "cfg", 3, "r1")
        led.mark_running("a", "r1")
    with Ledger(tmp_path / "l.sqlite") as led:  # the killed run never finished "a"
        plan = led.plan([PlannedInput("a", a)], "cfg", 3, "r2")
        assert plan.todo == ["a"] and plan.requeued == ["a"]
        assert led.get("a").status == QUEUED and led.get("a").attempts == 1
        assert [ev["event"] for ev in led.events("a")] == ["queued", "started", "interrupted"]


def test_failed_rows_are_retried_up_to_max_attempts(tmp_path: Path) -> None:
    a = _video(tmp_path, "a.mp4")
    with Ledger(tmp_path / "l.sqlite") as led:
        for attempt in range(1, 3):
            plan = led.plan([PlannedInput("a", a)], "cfg", 2, f"r{attempt}")
            assert plan.todo == ["a"]
            led.mark_running("a", f"r{attempt}")
            led.mark_failed("a", f"r{attempt}", "VideoDecodeError: a.mp4: broken\nsecond line", 0.5)
        e = led.get("a")
        assert (e.status, e.attempts, e.error) == (FAILED, 2, "VideoDecodeError: a.mp4: broken")
        plan = led.plan([PlannedInput("a", a)], "cfg", 2, "r3")
        assert plan.given_up == ["a"] and plan.todo == []
        # a new config gives the video a fresh set of attempts
        plan = led.plan([PlannedInput("a", a)], "cfg-new", 2, "r4")
        assert plan.todo == ["a"] and led.get("a").attempts == 0


def test_done_rows_are_redone_when_config_input_or_output_change(tmp_path: Path) -> None:
    a = _video(tmp_path, "a.mp4", b"one")
    with Ledger(tmp_path / "l.sqlite") as led:
        led.plan([PlannedInput("a", a)], "cfg", 3, "r1")
        _finish(led, tmp_path, "a")
        assert led.plan([PlannedInput("a", a)], "cfg2", 3, "r2").requeued == ["a"]
        assert led.get("a").attempts == 0  # a changed config starts over
        _finish(led, tmp_path, "a", "r2")
        assert led.plan([PlannedInput("a", a)], "cfg2", 3, "r3").skipped == ["a"]
        # same bytes, new mtime: still done (the hash decides)
        from hmrflow.pipeline.provenance import file_sha256

        led._tx([("UPDATE videos SET input_hash = ? WHERE video_id = 'a'", (file_sha256(a),))])
        st = os.stat(a)
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        assert led.plan([PlannedInput("a", a)], "cfg2", 3, "r4").skipped == ["a"]
        # different bytes: redone
        Path(a).write_bytes(b"two!")
        assert led.plan([PlannedInput("a", a)], "cfg2", 3, "r5").todo == ["a"]
        _finish(led, tmp_path, "a", "r5")
        # output deleted by someone: redone
        (tmp_path / "out" / "a" / "manifest.json").unlink()
        assert led.plan([PlannedInput("a", a)], "cfg2", 3, "r6").todo == ["a"]


def test_duplicate_done_reports_are_recorded_once(tmp_path: Path) -> None:
    a = _video(tmp_path, "a.mp4")
    with Ledger(tmp_path / "l.sqlite") as led:
        led.plan([PlannedInput("a", a)], "cfg", 3, "r1")
        led.mark_running("a", "r1")
        out = {"output": _output(tmp_path, "a"), "frames": 5}
        assert led.mark_done("a", "r1", out) is True
        assert led.mark_done("a", "r1", out) is False  # e.g. a retried Ray task reporting again
        assert led.done_count_per_video() == {"a": 1}


def test_runs_table_keeps_summaries(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as led:
        led.start_run("r1", {"runner": "local"})
        led.finish_run("r1", {"done": 3, "failed": 1})
        (run,) = led.runs()
        assert run["info"] == {"runner": "local"} and run["summary"]["failed"] == 1 and run["finished_at"]


_WRITER = """
import sys, time
from hmrflow.jobs.batch.ledger import Ledger, PlannedInput
led = Ledger(sys.argv[1])
ids = [f"v{i:04d}" for i in range(2000)]
led.plan([PlannedInput(v, "/nonexistent/" + v + ".mp4") for v in ids], "cfg", 3, "r1")
print("planned", flush=True)
for v in ids:
    led.mark_running(v, "r1")
    led.mark_done(v, "r1", {"output": "", "frames": 1})
"""


def test_sigkill_mid_write_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "planned"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with Ledger(db) as led:
        counts = led.counts()
        assert sum(counts.values()) == 2000
        assert counts[RUNNING] <= 1  # at most the one being worked on when killed
        done_events = led.done_count_per_video()
        assert all(n == 1 for n in done_events.values())
        assert len(done_events) == counts[DONE]


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "_job" / "lock"
    with JobLock(path, what="run-1"):
        with pytest.raises(LockHeld) as err:
            JobLock(path).acquire()
        assert err.value.holder["pid"] == os.getpid() and "run-1" in str(err.value)
    with JobLock(path) as again:  # released on exit
        assert again.held


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    code = (
        "import sys, time; from hmrflow.jobs.batch.locking import JobLock; "
        "JobLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld):
            JobLock(path).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with JobLock(path) as lock:
        assert lock.held
