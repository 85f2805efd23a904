"""Batch jobs with the local runner: ledger, one bad video, hangs, crashes, kill -9 and resume.

Real decode and write stages on tiny generated videos, small real stages in between
(``fake_stages``).  The kill test runs ``hmrflow batch`` in a subprocess and SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.batch.inputs import enumerate_inputs
from hmrflow.jobs.batch.ledger import Ledger
from hmrflow.jobs.batch.locking import JobLock
from hmrflow.jobs.batch.run import BatchOptions, ledger_path, lock_path, run_batch
from tests.integration.fake_stages import assert_same_outputs, fake_spec
from tests.videos import make_video, write_garbage

REPO = Path(__file__).resolve().parents[2]


def _videos(folder: Path, names: list[str], n_frames: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if name.startswith("bad"):
            write_garbage(folder / f"{name}.mp4", 3000, seed=i)
        else:
            make_video(folder / f"{name}.mp4", n_frames=n_frames + (0 if "hang" in name else i), size=(64, 48))


def test_bad_hung_and_crashing_videos_do_not_stop_the_others(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _videos(src, ["v0", "v1", "bad", "crash_me", "hang_me"])
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,subject\n"
        + "".join(f"in/{n}.mp4,S{i}\n" for i, n in enumerate(["v0", "v1", "bad", "crash_me", "hang_me"]))
    )
    out = tmp_path / "out"
    inputs = enumerate_inputs(manifest)
    spec = fake_spec(out)
    opts = BatchOptions(stall_timeout_s=3.0, progress=False, max_attempts=1)
    s = run_batch(inputs, spec, out, opts)

    assert (s.done, s.failed, s.exit_code) == (2, 3, 1)
    assert s.frames == 20 + 21 and s.tracks == 4 and s.people == 4
    with Ledger(ledger_path(out)) as led:
        rows = {e.video_id: e for e in led.entries()}
        assert {k: e.status for k, e in rows.items()} == {
            "v0": "done",
            "v1": "done",
            "bad": "failed",
            "crash_me": "failed",
            "hang_me": "failed",
        }
        assert rows["bad"].error.startswith("VideoDecodeError: ") and "bad.mp4" in rows["bad"].error
        assert rows["crash_me"].error == "worker process died (killed by signal SIGKILL)"
        assert rows["hang_me"].error.startswith("timed out: no progress for 3 s")
        assert rows["v1"].frames == 21 and rows["v1"].observed == 42 and rows["v1"].input_hash
    # per-video metadata from the manifest is carried into the output's provenance
    man = json.loads((out / "v1" / "manifest.json").read_text())
    assert man["extra"]["metadata"] == {"subject": "S1"}
    # the batch path writes exactly what the LocalRunner writes for the same video
    ref = tmp_path / "ref"
    runner = fake_spec(ref).local_runner()
    v0 = next(v for v in inputs if v.video_id == "v0")
    from hmrflow.jobs.pipelines import probe_clip

    runner.run(probe_clip(v0.path, "v0"), extra={"metadata": dict(v0.metadata)})
    assert_same_outputs(out / "v0", ref / "v0", atol=0.0)
    # QC report of the run
    qc = json.loads((Path(s.report_dir) / "qc.json").read_text())
    per = {v["video_id"]: v for v in qc["videos"]}
    assert per["v0"]["people"] == 2 and per["v0"]["tracks"] == 2 and per["v0"]["filled"] == 0
    assert np.isfinite(per["v0"]["jitter_m_s3"]) and per["v0"]["jitter_m_s3"] > 0
    assert per["hang_me"]["status"] == "failed" and per["hang_me"]["jitter_m_s3"] is None
    md = (Path(s.report_dir) / "qc.md").read_text()
    assert md.index("| bad |") < md.index("| v0 |")  # failures listed first
    assert (Path(s.report_dir) / "qc.csv").read_text().count("\n") == 6

    # rerun: done videos skipped, failed ones have used their single attempt
    s2 = run_batch(inputs, spec, out, opts)
    assert (s2.skipped, s2.given_up, s2.done, s2.failed, s2.exit_code) == (2, 3, 0, 0, 1)
    with Ledger(ledger_path(out)) as led:
        assert led.done_count_per_video() == {"v0": 1, "v1": 1}


def test_strict_run_stops_at_the_first_failure(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _videos(src, ["bad0", "c1", "c2"])
    out = tmp_path / "out"
    s = run_batch(enumerate_inputs(src), fake_spec(out), out, BatchOptions(strict=True, isolate=False, progress=False))
    assert s.strict_stop and s.exit_code == 3 and s.failed == 1 and s.done == 0 and s.not_started == 2
    assert "STRICT" in s.table()
    with Ledger(ledger_path(out)) as led:
        assert {e.video_id: (e.status, e.attempts) for e in led.entries()} == {
            "bad0": ("failed", 1),
            "c1": ("queued", 0),
            "c2": ("queued", 0),
        }
    assert not (out / "c1").exists()


def test_job_run_leaves_quietly_while_a_previous_run_holds_the_lock(tmp_path: Path, capsys) -> None:
    from hmrflow.jobs import cli

    _videos(tmp_path / "in", ["v"])
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: nightly\ninputs:\n  - folder: in\noutput: out\npipeline: tests.integration.fake_stages:make_spec\n"
    )
    with JobLock(lock_path(tmp_path / "out"), what="nightly-earlier"):
        assert cli.main(["job", "run", str(spec), "--no-progress"]) == 0
    assert "previous run still going" in capsys.readouterr().out
    assert not (tmp_path / "out" / "v").exists()
    assert cli.main(["job", "check", str(spec)]) == 0
    assert "1 videos" in capsys.readouterr().out


def test_batch_windows_from_manifest_columns_and_start_end(tmp_path: Path, capsys) -> None:
    """Per-video start/end columns, --start/--end where a cell is empty, a window past a video's
    end failing that video alone, and a changed window redoing its video."""
    import pandas as pd

    from hmrflow.jobs import cli

    _videos(tmp_path / "in", ["a", "b", "c", "d"], n_frames=40)  # 40, 41, 42, 43 frames at 30 fps
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,start,end,subject\nin/a.mp4,10f,20f,S1\nin/b.mp4,,,S2\nin/c.mp4,0.5,1s,S3\nin/d.mp4,90f,100f,S4\n"
    )
    out = tmp_path / "out"
    argv = ["batch", str(manifest), "-o", str(out), "--start", "5f", "--end", "30f", "--preset", "clip"]
    argv += ["--pipeline", "tests.integration.fake_stages:make_spec", "--no-isolate", "--no-progress"]
    assert cli.main(argv) == 1  # d failed: its window starts after its last frame
    capsys.readouterr()

    def frames(vid: str) -> tuple[int, int, float, float, dict]:
        t = pd.read_parquet(out / vid / "tracks.parquet")
        man = json.loads((out / vid / "manifest.json").read_text())
        return int(t.frame_idx.min()), int(t.frame_idx.max()), float(t.pts_s.min()), float(t.pts_s.max()), man

    first, last, t0, t1, man = frames("a")  # its own window
    assert (first, last) == (10, 19) and (t0, t1) == pytest.approx((10 / 30, 19 / 30), abs=1e-9)
    assert man["extra"] == {"metadata": {"subject": "S1"}, "window": {"start": "10f", "end": "20f"}}
    assert man["counts"]["frames_decoded"] == 10
    first, last, *_, man = frames("b")  # empty cells: --start/--end
    assert (first, last) == (5, 29) and man["extra"]["window"] == {"start": "5f", "end": "30f"}
    first, last, t0, t1, man = frames("c")  # seconds: 0.5 <= t < 1.0
    assert (first, last) == (15, 29) and t0 == pytest.approx(0.5, abs=1e-9)
    with Ledger(ledger_path(out)) as led:
        rows = {e.video_id: e for e in led.entries()}
    assert rows["d"].status == "failed" and not (out / "d").exists()
    assert rows["d"].error.endswith("d.mp4: start 90f is beyond the video's last frame (it has 43 frames, 0-42)")

    # a changed window redoes that video only (done videos with unchanged windows are skipped)
    manifest.write_text(manifest.read_text().replace("in/a.mp4,10f,20f", "in/a.mp4,12f,20f"))
    assert cli.main(argv) == 1
    assert "skipped (already done) 2" in capsys.readouterr().out  # b and c
    assert frames("a")[:2] == (12, 19)

    # a bad cell stops the job before it starts: exit 2, one line naming the manifest row and column
    manifest.write_text("path,start\nin/a.mp4,soon\n")
    assert cli.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "list.csv: row 1: 'start' 'soon': expected seconds" in err[0]
    # a manifest start after the job's --end: also before the job starts
    manifest.write_text("path,start\nin/a.mp4,35f\n")
    assert cli.main(argv) == 2
    assert "end 30f must be after start 35f" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_kill_9_mid_run_loses_nothing_and_resume_does_each_video_once(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    names = [f"clip{i}" for i in range(5)]
    _videos(src, names, n_frames=24)
    cmd = [
        sys.executable,
        "-m",
        "hmrflow.jobs.cli",
        "-q",
        "batch",
        str(src),
        "--out",
        str(out),
        "--preset",
        "clip",
        "--set",
        "decode.batch_size=8",
        "--pipeline",
        "tests.integration.fake_stages:make_spec",
        "--no-progress",
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        HMRFLOW_FAKE_DELAY_S="0.4",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if ledger_path(out).exists():
            con = sqlite3.connect(f"file:{ledger_path(out)}?mode=ro", uri=True, timeout=5)
            try:
                done = con.execute("SELECT COUNT(*) FROM videos WHERE status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            finally:
                con.close()
        if done >= 2:
            break
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    assert done >= 2, "the batch did not make progress in time"
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for _ in range(50):  # the worker process dies with its parent
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)

    with Ledger(ledger_path(out)) as led:
        first = {e.video_id: e for e in led.entries()}
    done_first = sorted(v for v, e in first.items() if e.status == "done")
    assert len(done_first) >= 2 and len(done_first) < 5
    assert sum(e.status == "running" for e in first.values()) <= 1
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    for name in visible:  # whatever is visible is complete
        if name == "_job":
            continue
        man = json.loads((out / name / "manifest.json").read_text())
        from hmrflow.pipeline.provenance import file_sha256

        for fname, info in man["files"].items():
            assert file_sha256(out / name / fname) == info["sha256"]
    stamps = {v: (out / v / "manifest.json").stat().st_mtime_ns for v in done_first}

    rerun = subprocess.run(cmd, env={**env, "HMRFLOW_FAKE_DELAY_S": "0"}, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped (already done) {len(done_first)}" in rerun.stdout
    with Ledger(ledger_path(out)) as led:
        assert {e.video_id: e.status for e in led.entries()} == {n: "done" for n in names}
        assert led.done_count_per_video() == {n: 1 for n in names}
    assert {v: (out / v / "manifest.json").stat().st_mtime_ns for v in done_first} == stamps
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # temporaries of the killed writer cleared
    assert sorted(p.name for p in out.iterdir()) == sorted(["_job", *names])


def test_model_stages_plug_into_the_factory_dict_with_one_line_each(tmp_path: Path, monkeypatch) -> None:
    from hmrflow.jobs import pipelines
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.errors import HmrflowError
    from tests.integration.fake_stages import BandDetect, PixelEstimate, SmoothRefine

    cfg = load_config("clip", [])
    monkeypatch.setitem(pipelines.MODEL_STAGES, "detect", None)
    with pytest.raises(HmrflowError, match="'detect' stage is not available"):
        pipelines.build_spec(cfg, tmp_path)
    monkeypatch.setitem(pipelines.MODEL_STAGES, "detect", lambda cfg, out: BandDetect())
    monkeypatch.setitem(pipelines.MODEL_STAGES, "estimate", lambda cfg, out: PixelEstimate())
    monkeypatch.setitem(pipelines.MODEL_STAGES, "refine", lambda cfg, out: SmoothRefine())
    spec = pipelines.build_spec(cfg, tmp_path)
    # the camera observer sits between detection and estimation (it sees the frames and the people's boxes)
    assert [type(s).__name__ for s in spec.frame_stages] == ["BandDetect", "CameraObserver", "PixelEstimate"]
    assert type(spec.refine).__name__ == "SmoothRefine" and spec.config == cfg.resolved_dict()
    assert type(spec.world).__name__ == "WorldStage"
    no_refine = pipelines.build_spec(load_config("clip", ["refine.enabled=false"]), tmp_path)
    assert no_refine.refine is None and type(no_refine.decode).__name__ == "DecodeStage"
