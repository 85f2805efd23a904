"""World-frame metrics of ``hmrflow eval`` (jobs/evaluate/world.py) on hand-made trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmrflow.jobs.evaluate import world as W


def _walk(T: int = 150, speed: float = 1.2, fps: float = 30.0) -> np.ndarray:
    """(T, 24, 3) a rigid 'skeleton' walking along +x, y up; feet alternate planted."""
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.3, (24, 3))
    offsets[:, 1] = np.abs(offsets[:, 1]) + 0.2
    x = np.arange(T) * speed / fps
    j = offsets[None] + np.stack([x, np.zeros(T), np.zeros(T)], 1)[:, None]
    return j


def test_segments_split_runs_and_drop_short_pieces() -> None:
    frames = np.r_[np.arange(0, 230), np.arange(300, 320)]
    segs = W.segments(frames)
    assert [len(s) for s in segs] == [100, 100, 30]  # the 20-frame run after the gap is too short


def test_wa_mpjpe_ignores_a_similarity_transform_and_w_mpjpe_sees_drift() -> None:
    from scipy.spatial.transform import Rotation

    gt = _walk(100)
    R = Rotation.from_rotvec([0.1, 0.7, -0.2]).as_matrix()
    pred = 1.1 * gt @ R.T + [3.0, -1.0, 2.0]
    e = W.segment_errors(pred, gt)
    assert e["wa_mpjpe_mm"] < 1e-6 and e["w_mpjpe_mm"] < 1e-6
    assert e["rte_pct"] > 1.0  # the root trajectory is aligned rigidly: a wrong scale counts
    assert W.segment_errors(gt @ R.T + [3.0, -1.0, 2.0], gt)["rte_pct"] < 1e-6
    drift = gt.copy()
    drift[..., 2] += np.linspace(0, 0.5, 100)[:, None]  # 0.5 m sideways drift over the segment
    d = W.segment_errors(drift, gt)
    assert d["w_mpjpe_mm"] > 200 and d["wa_mpjpe_mm"] < d["w_mpjpe_mm"]
    assert d["rte_pct"] < 1.0  # a straight drift is a turned straight path: rigid alignment undoes it
    bend = gt.copy()
    bend[..., 2] += (np.linspace(-1, 1, 100) ** 2 * 0.5)[:, None]  # a curved path where the truth is straight
    assert W.segment_errors(bend, gt)["rte_pct"] > 3.0


def test_walking_speed_and_skating() -> None:
    gt = _walk(150, speed=1.2)
    fast = gt.copy()
    fast[..., 0] *= 1.1
    r = W.person_world(fast, gt, np.arange(150), 30.0)
    assert r["speed_true"] == pytest.approx(1.2, rel=1e-6)
    assert (r["speed_pred"] - r["speed_true"]) / r["speed_true"] == pytest.approx(0.1, rel=1e-3)
    # feet planted in the truth (a person standing), sliding 3 mm/frame in the prediction
    stand = np.tile(_walk(1)[0], (60, 1, 1))
    slide = stand.copy()
    slide[:, [10, 11], 0] += np.arange(60)[:, None] * 0.003
    r = W.person_world(slide, stand, np.arange(60), 30.0)
    assert np.mean(r["foot_skate_mm"]) == pytest.approx(3.0, rel=1e-3)


def test_camera_errors_from_a_manifest_entry() -> None:
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    true_vfov = math.degrees(2 * math.atan(240 / 500))
    cam = {"intrinsics": {"fy": 400.0, "height": 480}, "world": {"up_in_first_camera": [0.0, -1.0, 0.0]}}
    pitch = np.array([[1, 0, 0], [0, math.cos(0.2), -math.sin(0.2)], [0, math.sin(0.2), math.cos(0.2)]])
    world_to_cam0 = pitch @ np.diag([1.0, -1.0, -1.0])  # y up in the world, y down in the camera, tilted 0.2 rad
    e = W.camera_errors(cam, K, 480, world_to_cam0)
    assert e["fov_err_deg"] == pytest.approx(math.degrees(2 * math.atan(240 / 400)) - true_vfov)
    assert e["gravity_err_deg"] == pytest.approx(math.degrees(0.2), abs=1e-6)
