"""Ray runner: same outputs as the LocalRunner, per-video errors, ledger-driven batch, faults.

One local Ray instance (2 CPUs) per module.  Real decode/write stages on tiny videos, the
small real stages of ``fake_stages`` in between.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hmrflow.jobs.batch.inputs import enumerate_inputs
from hmrflow.jobs.batch.ledger import Ledger
from hmrflow.jobs.batch.run import BatchOptions, ledger_path, run_batch
from hmrflow.jobs.pipelines import probe_clip
from tests.integration.fake_stages import assert_same_outputs, fake_spec
from tests.videos import make_video, write_garbage

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from hmrflow.pipeline.runner_ray import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def _make_inputs(folder: Path) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    make_video(folder / "a.mp4", n_frames=20, size=(64, 48))
    make_video(folder / "b_long.mp4", n_frames=37, size=(64, 48), vfr=True)  # 5 decode batches, VFR pts
    make_video(folder / "c_rot.mp4", n_frames=12, size=(48, 64), rotation=90)
    write_garbage(folder / "d_bad.mp4", 3000)
    return enumerate_inputs(folder)


def test_ray_batch_writes_what_the_local_runner_writes(ray_cluster, tmp_path: Path) -> None:
    """The central promise, through the production path (batch job, ledger, supervised actors)."""
    inputs = _make_inputs(tmp_path / "in")
    make_video(tmp_path / "in" / "e_hang.mp4", n_frames=40, size=(64, 48))
    inputs = enumerate_inputs(tmp_path / "in")
    local_out, out = tmp_path / "local", tmp_path / "out"
    runner = fake_spec(local_out).local_runner()
    local_errors = {}
    for v in inputs:
        if v.video_id == "e_hang":
            continue
        try:
            runner.run(probe_clip(v.path, v.video_id))
        except Exception as exc:
            local_errors[v.video_id] = f"{type(exc).__name__}: {exc}"
    assert set(local_errors) == {"d_bad"}

    opts = BatchOptions(runner="ray", isolate=True, stall_timeout_s=3.0, progress=False, max_attempts=1)
    s = run_batch(inputs, fake_spec(out), out, opts)
    assert (s.done, s.failed, s.exit_code) == (3, 2, 1)
    assert s.frames == 20 + 37 + 12 and s.tracks == 6
    with Ledger(ledger_path(out)) as led:
        rows = {e.video_id: e for e in led.entries()}
        assert rows["e_hang"].status == "failed" and rows["e_hang"].error.startswith("timed out: no progress")
        assert rows["d_bad"].status == "failed" and rows["d_bad"].error == local_errors["d_bad"]
        assert led.done_count_per_video() == {"a": 1, "b_long": 1, "c_rot": 1}
        assert rows["b_long"].frames == 37 and rows["b_long"].rows_written == 74 and rows["a"].peak_rss_mb > 0
    for vid in ("a", "b_long", "c_rot"):
        assert_same_outputs(out / vid, local_out / vid, atol=1e-5)
    assert not (out / "d_bad").exists() and not (out / "e_hang").exists()
    s2 = run_batch(inputs, fake_spec(out), out, opts)  # resume: nothing left to do
    assert (s2.skipped, s2.given_up, s2.done) == (3, 2, 0)


@pytest.mark.slow
def test_killed_ray_worker_does_not_fail_the_job(ray_cluster, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        make_video(src / f"v{i}.mp4", n_frames=24, size=(64, 48))
    inputs = enumerate_inputs(src)
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    spec = fake_spec(out, delay_s=0.5, pid_dir=str(pids))
    result = {}

    def job() -> None:
        result["s"] = run_batch(inputs, spec, out, BatchOptions(runner="ray", isolate=False, progress=False))

    t = threading.Thread(target=job)
    t.start()
    deadline = time.monotonic() + 120
    while not list(pids.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # mid-video
    victim = int(next(pids.iterdir()).name)
    os.kill(victim, signal.SIGKILL)
    t.join(timeout=600)
    s = result["s"]
    assert (s.done, s.failed) == (6, 0)
    assert len(list(pids.iterdir())) >= 2  # the actor was restarted
    with Ledger(ledger_path(out)) as led:
        assert led.done_count_per_video() == {f"v{i}": 1 for i in range(6)}
    ref = tmp_path / "ref"
    runner = fake_spec(ref).local_runner()
    for v in inputs:
        runner.run(probe_clip(v.path, v.video_id))
        assert_same_outputs(out / v.video_id, ref / v.video_id)
