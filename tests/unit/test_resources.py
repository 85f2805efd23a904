"""What the Ray runner asks for, from the stages' declarations and configured devices (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hmrflow.jobs.pipelines import build_spec
from hmrflow.pipeline.assembly import plan_resources
from hmrflow.pipeline.config import load_config
from hmrflow.pipeline.errors import ConfigError
from hmrflow.pipeline.stage import BaseStage, Resources


def _built(*overrides: str):
    return build_spec(load_config("clip", list(overrides)), Path("/tmp/unused")).build()


def test_cpu_only_cluster_asks_for_no_gpu() -> None:
    plan = plan_resources(_built(), cluster_gpus=0)
    assert (plan.frame.gpus, plan.finish.gpus) == (0.0, 0.0)
    assert plan.frame.cpus == 1.0 and plan.frame.actor and plan.finish.actor  # models: kept as actors


def test_auto_devices_ask_for_gpus_when_the_cluster_has_them() -> None:
    built = _built()
    two = plan_resources(built, cluster_gpus=2)
    assert two.frame.gpus == pytest.approx(1.0)  # detect 0.5 + estimate 0.5, fused in one actor
    assert two.finish.gpus == pytest.approx(0.25)  # the prior's share: the second GPU has room
    one = plan_resources(built, cluster_gpus=1)
    assert one.frame.gpus == pytest.approx(1.0) and one.finish.gpus == 0.0  # no room left: refine on CPU


def test_gpus_per_worker_shares_a_gpu_and_overcommitting_is_an_error() -> None:
    built = _built()
    plan = plan_resources(built, cluster_gpus=1, frame_workers=2, gpus_per_worker=0.5)
    assert plan.frame.gpus == 0.5 and plan.finish.gpus == 0.0
    with pytest.raises(ConfigError, match="3 frame workers x 1 GPU"):
        plan_resources(built, cluster_gpus=2, frame_workers=3)
    with pytest.raises(ConfigError, match="no GPUs"):
        plan_resources(built, cluster_gpus=0, gpus_per_worker=0.5)


def test_device_settings_decide_which_stages_count() -> None:
    assert plan_resources(_built("device=cpu"), cluster_gpus=4).frame.gpus == 0.0
    # boxes from a file: no detector model, only the estimator's share
    file_boxes = plan_resources(_built("detect.kind=file", "detect.detections_path=x.txt"), cluster_gpus=1)
    assert file_boxes.frame.gpus == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="'cuda' but the Ray cluster has no GPUs"):
        plan_resources(_built("estimate.device=cuda"), cluster_gpus=0)
    with pytest.raises(ConfigError, match="frame workers take the cluster's GPUs"):
        plan_resources(_built("refine.device=cuda"), cluster_gpus=1)


class _TwoCpuStage(BaseStage):
    resources = Resources(cpus=2.0, gpus=0.0)


def test_declared_cpus_are_read() -> None:
    import dataclasses

    built = _built()
    built = dataclasses.replace(built, frame_stages=(*built.frame_stages, _TwoCpuStage()))
    assert plan_resources(built, cluster_gpus=0).frame.cpus == 2.0


def test_without_gpus_workers_take_whole_videos_and_fill_the_cpus() -> None:
    built = _built()
    plan = plan_resources(built, cluster_gpus=0, frame_workers=None, cluster_cpus=8)
    assert plan.fused and plan.frame_workers == 8 and plan.frame.gpus == 0.0
    plan = plan_resources(_built("device=cpu"), cluster_gpus=4, frame_workers=None, cluster_cpus=8)
    assert plan.fused and plan.frame_workers == 8  # every stage pinned to the CPU: GPUs unused


def test_with_gpus_auto_workers_are_one_per_gpu_and_the_operators_stay_apart() -> None:
    plan = plan_resources(_built(), cluster_gpus=4, frame_workers=None, cluster_cpus=64)
    assert not plan.fused and plan.frame_workers == 4 and plan.frame.gpus == pytest.approx(1.0)
    shared = plan_resources(_built(), cluster_gpus=4, frame_workers=None, gpus_per_worker=0.5, cluster_cpus=64)
    assert shared.frame_workers == 8 and shared.finish.gpus == 0.0  # the GPUs are full: the prior runs on CPU
