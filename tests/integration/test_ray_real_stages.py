"""The default pipeline (bundled detector, estimator and motion prior) under Ray equals the
LocalRunner (with the estimator's image features carried to refinement), and the Ray workers
ask for the GPUs the stages declare.

The local Ray instance declares one GPU (no CUDA is needed: Ray schedules on declared
resources and tells each worker which GPU ids it was given through ``CUDA_VISIBLE_DEVICES``;
torch then finds no CUDA device and ``device=auto`` runs on the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hmrflow.jobs.batch.inputs import enumerate_inputs
from hmrflow.jobs.batch.run import BatchOptions, run_batch
from hmrflow.jobs.pipelines import build_spec, probe_clip
from hmrflow.pipeline.config import load_config
from tests.integration.fake_stages import assert_same_outputs

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_one_gpu():
    ray = pytest.importorskip("ray")
    from hmrflow.pipeline.runner_ray import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2, num_gpus=1)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec

    folder = tmp_path_factory.mktemp("clips")
    for seed, people in ((31, 2), (32, 3)):
        d = render_clip(
            SceneSpec(name=f"r{seed}", seed=seed, people=people, seconds=1.5, width=320, height=240),
            folder / "gt",
            progress=False,
        )
        (folder / "in").mkdir(exist_ok=True)
        (folder / "in" / f"r{seed}.mp4").write_bytes((d / f"r{seed}.mp4").read_bytes())
    return folder / "in"


def test_real_stages_under_ray_equal_local_and_ask_for_the_declared_gpu(
    ray_one_gpu, clips: Path, tmp_path: Path
) -> None:
    cfg = load_config("clip")
    inputs = enumerate_inputs(clips)
    local = build_spec(cfg, tmp_path / "local").local_runner()
    for v in inputs:
        local.run(probe_clip(v.path, v.video_id))

    # the manifest names every weights file and the body model with its sha256
    models = json.loads((tmp_path / "local" / inputs[0].video_id / "manifest.json").read_text())["models"]
    assert set(models) == {"detector", "estimator", "motion_prior", "camera_network", "body_model"}
    assert all(len(m["sha256"]) == 64 for m in models.values())

    # the estimator's image features reach refinement (the bundled prior is conditioned on
    # them): refined without them, the same video gives other tables
    v0 = inputs[0]
    nofeat = build_spec(load_config("clip", ["refine.use_features=false"]), tmp_path / "nofeat").local_runner()
    nofeat.run(probe_clip(v0.path, v0.video_id))
    assert (tmp_path / "nofeat" / v0.video_id / "tracks.parquet").read_bytes() != (
        tmp_path / "local" / v0.video_id / "tracks.parquet"
    ).read_bytes()

    from hmrflow.pipeline.runner_ray import RayRunner

    plan = RayRunner(build_spec(cfg, tmp_path / "ray")).resource_plan()
    assert plan.frame.gpus == pytest.approx(1.0) and plan.finish.gpus == 0.0  # one GPU: all to detect+estimate

    out = tmp_path / "ray"
    s = run_batch(inputs, build_spec(cfg, out), out, BatchOptions(runner="ray", progress=False, qc=False))
    assert (s.done, s.failed) == (2, 0) and s.tracks >= 4
    for v in inputs:
        # byte-identical tables: the same stages, the same rows in the same order
        assert (out / v.video_id / "tracks.parquet").read_bytes() == (
            tmp_path / "local" / v.video_id / "tracks.parquet"
        ).read_bytes()
        assert_same_outputs(out / v.video_id, tmp_path / "local" / v.video_id, atol=0.0)
        man = json.loads((out / v.video_id / "manifest.json").read_text())
        # Ray gave the frame worker the declared GPU (id 0); the local run had none assigned
        assert man["volatile"]["frame_worker"]["cuda_visible_devices"] == "0"
        assert man["counts"]["tracks"] >= 2

    # every stage on the CPU: no GPU asked for, each worker takes whole videos (the CPU-only path)
    cpu_cfg = load_config("clip", ["device=cpu"])
    plan = RayRunner(build_spec(cpu_cfg, tmp_path / "ray_cpu")).resource_plan()
    assert plan.fused and plan.frame.gpus == 0.0 and plan.frame_workers == 2  # one per CPU of the instance
    out = tmp_path / "ray_cpu"
    s = run_batch(inputs, build_spec(cpu_cfg, out), out, BatchOptions(runner="ray", progress=False, qc=False))
    assert (s.done, s.failed) == (2, 0)
    for v in inputs:
        assert (out / v.video_id / "tracks.parquet").read_bytes() == (
            tmp_path / "local" / v.video_id / "tracks.parquet"
        ).read_bytes()
        man = json.loads((out / v.video_id / "manifest.json").read_text())
        assert man["volatile"]["frame_worker"]["cuda_visible_devices"] in (None, "")  # no GPU was assigned
