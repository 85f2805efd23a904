"""Procedural motion library: joint limits, smoothness, gait numbers, composition, paths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmrflow.priors.joint_limits import LIMITS_DEG, check_limits, clamp, pose_euler_deg
from hmrflow.priors.motion_library import MOTIONS, compose_motion, random_params, random_path_motion
from hmrflow.priors.motions.core import Motion, angular_speed, heading_of, smooth_heading
from hmrflow.priors.motions.kinematics import contact_heights, forward_kinematics, rest_joints
from hmrflow.priors.skeleton import JOINT_INDEX as J

FPS = 30.0


def _angular_accel(poses: np.ndarray, fps: float) -> np.ndarray:
    """(T-2, 24) norm of the change of the local angular velocity vector (rad/s^2)."""
    p = poses.astype(np.float64)
    r = Rotation.from_rotvec(p.reshape(-1, 3))
    t, j = p.shape[:2]
    r = r.as_matrix().reshape(t, j, 3, 3)
    rel = np.einsum("tjik,tjil->tjkl", r[:-1], r[1:])  # R_t^T R_{t+1}
    w = Rotation.from_matrix(rel.reshape(-1, 3, 3)).as_rotvec().reshape(t - 1, j, 3) * fps
    return np.linalg.norm(np.diff(w, axis=0), axis=-1) * fps


def _euler(m: Motion, joint: str, axis: int) -> np.ndarray:
    return pose_euler_deg(m.poses)[:, J[joint], axis]


# ------------------------------------------------------------------ every motion
@pytest.mark.parametrize("name", sorted(MOTIONS))
def test_motion_within_limits_smooth_and_grounded(name: str) -> None:
    rng = np.random.default_rng(7)
    motions = [MOTIONS[name](rng, 4.0, FPS)]
    for _ in range(3):  # random parameter sets as compose_motion draws them
        motions.append(MOTIONS[name](rng, 4.0, FPS, **random_params(name, rng)))
    for m in motions:
        assert m.poses.shape == (120, 24, 3) and m.poses.dtype == np.float32
        assert m.trans.shape == (120, 3)
        assert check_limits(m.poses) == [], check_limits(m.poses)[:3]
        # no frame-to-frame jumps: < 30 deg/frame at 30 fps (16 rad/s; a running knee reaches
        # ~13 rad/s), bounded angular acceleration
        assert np.degrees(angular_speed(m.poses, FPS).max() / FPS) < 30.0
        assert _angular_accel(m.poses, FPS).max() < 300.0  # a running knee: ~220
        # feet: never more than 1.5 cm into the ground, and touching it at some point
        h = contact_heights(m.poses, 0.93) + m.trans[:, 1:2]
        assert h.min() > -0.015
        assert h.min(axis=1).min() < 0.01


def test_acceleration_metric_detects_a_jump() -> None:
    m = MOTIONS["stand_sway"](np.random.default_rng(0), 2.0, FPS)
    poses = m.poses.copy()
    poses[30:, J["left_knee"], 0] += np.radians(60)
    assert np.degrees(angular_speed(poses, FPS).max() / FPS) > 59
    assert _angular_accel(poses, FPS).max() > 900


# ------------------------------------------------------------------ gait
@pytest.mark.parametrize("speed,direction", [(0.8, 0.0), (1.3, 45.0), (1.8, -120.0)])
def test_walk_speed_and_heading(speed: float, direction: float) -> None:
    m = MOTIONS["walk"](np.random.default_rng(1), 6.0, FPS, speed=speed, direction=direction, start_xz=(2.0, -1.0))
    np.testing.assert_allclose(m.trans[0, [0, 2]], [2.0, -1.0], atol=0.03)
    step = np.diff(m.trans[:, [0, 2]], axis=0)
    mean_speed = np.linalg.norm(step, axis=1).mean() * FPS
    assert abs(mean_speed - speed) < 0.1 * speed
    disp = m.trans[-1, [0, 2]] - m.trans[0, [0, 2]]
    travel = np.degrees(np.arctan2(disp[0], disp[1]))
    assert abs((travel - direction + 180) % 360 - 180) < 3.0
    facing = np.degrees(smooth_heading(m.poses[:, 0], FPS)[FPS.__int__() : -FPS.__int__()])
    assert np.abs((facing - direction + 180) % 360 - 180).max() < 4.0
    # pelvis at about the given height with a bob of a few cm
    y = m.trans[:, 1]
    assert 0.85 < y.min() and y.max() < 0.95 and 0.01 < np.ptp(y) < 0.06


def test_walk_joint_curves() -> None:
    m = MOTIONS["walk"](np.random.default_rng(2), 6.0, FPS, speed=1.3)
    knee_l = _euler(m, "left_knee", 0)
    assert 45.0 <= knee_l.max() <= 75.0  # swing peak
    assert -5.0 <= knee_l.min() <= 10.0  # nearly straight at heel strike / mid-stance
    hip_l, hip_r = -_euler(m, "left_hip", 0), -_euler(m, "right_hip", 0)
    assert np.corrcoef(hip_l, hip_r)[0, 1] < -0.5  # legs in counter-phase
    assert 25.0 < hip_l.max() < 40.0 and -20.0 < hip_l.min() < 0.0
    arm_l = -_euler(m, "left_shoulder", 0)
    assert np.corrcoef(arm_l, hip_l)[0, 1] < -0.5  # the arm swings against its leg
    assert np.corrcoef(arm_l, hip_r)[0, 1] > 0.5
    # cadence ~ 110 steps/min at 1.3 m/s: the knee peaks once per stride (~0.93 Hz)
    peaks = np.nonzero((knee_l[1:-1] > knee_l[:-2]) & (knee_l[1:-1] >= knee_l[2:]) & (knee_l[1:-1] > 40))[0]
    stride_s = np.diff(peaks).mean() / FPS
    assert 0.95 < stride_s < 1.25


def test_run_is_faster_with_more_knee_flexion_and_flight() -> None:
    m = MOTIONS["run"](np.random.default_rng(3), 4.0, FPS, speed=3.2)
    assert _euler(m, "left_knee", 0).max() > 85.0
    speed = np.linalg.norm(np.diff(m.trans[:, [0, 2]], axis=0), axis=1).mean() * FPS
    assert abs(speed - 3.2) < 0.32
    h = contact_heights(m.poses, 0.93) + m.trans[:, 1:2]
    assert h.min(axis=1).max() > 0.02  # both feet off the ground at some frame


def test_turn_in_place_changes_heading_not_position() -> None:
    m = MOTIONS["turn"](np.random.default_rng(4), 3.0, FPS, angle=-90.0, direction=30.0)
    h = np.degrees(heading_of(m.poses[:, 0]))
    assert abs(h[0] - 30.0) < 6.0 and abs(h[-1] - (-60.0)) < 6.0
    assert np.linalg.norm(m.trans[-1, [0, 2]] - m.trans[0, [0, 2]]) < 0.2
    w = MOTIONS["turn"](np.random.default_rng(4), 4.0, FPS, angle=90.0, walking=True, speed=1.0)
    assert np.linalg.norm(w.trans[-1, [0, 2]] - w.trans[0, [0, 2]]) > 2.0


def test_side_step_moves_sideways() -> None:
    m = MOTIONS["side_step"](np.random.default_rng(5), 4.0, FPS, speed=0.5, side=1, direction=0.0)
    d = m.trans[-1] - m.trans[0]
    assert d[0] > 1.5 and abs(d[2]) < 0.1  # body-left = +x when facing +z
    assert np.abs(np.degrees(heading_of(m.poses[:, 0]))).max() < 1.0


# ------------------------------------------------------------------ exercises
def test_squat_lowers_pelvis_with_feet_planted() -> None:
    m = MOTIONS["squat"](np.random.default_rng(6), 5.0, FPS, depth=100.0, period=2.5)
    y = m.trans[:, 1]
    assert y.max() > 0.92 and y.min() < 0.93 - 0.25
    fk = forward_kinematics(m.poses, m.trans, rest_joints(0.93))
    ankles = fk[:, [J["left_ankle"], J["right_ankle"]]]
    assert np.abs(ankles[:, :, [0, 2]] - ankles[:1, :, [0, 2]]).max() < 0.01  # no sliding
    assert np.abs(ankles[:, :, 1] - 0.08).max() < 0.01  # heels on the floor


def test_jumping_jacks_arms_go_above_the_shoulders() -> None:
    m = MOTIONS["jumping_jacks"](np.random.default_rng(8), 3.0, FPS, rate=1.0)
    fk = forward_kinematics(m.poses, m.trans, rest_joints(0.93))
    above = fk[:, J["left_wrist"], 1] - fk[:, J["left_shoulder"], 1]
    assert above.max() > 0.3 and above.min() < -0.3
    spread = fk[:, J["left_ankle"], 0] - fk[:, J["right_ankle"], 0]
    assert spread.max() - spread.min() > 0.2


def test_sit_to_stand_phases() -> None:
    m = MOTIONS["sit_to_stand"](np.random.default_rng(9), 6.0, FPS, start="sit", period=6.0)
    assert m.trans[0, 1] < 0.65 and m.trans[:, 1].max() > 0.9
    assert [s[2] for s in m.segments()][:4] == ["sit", "stand_up", "stand", "sit_down"]
    assert 80.0 < _euler(m, "left_knee", 0)[0] < 100.0


# ------------------------------------------------------------------ composition
def test_compose_is_deterministic_continuous_and_within_limits() -> None:
    a = compose_motion(np.random.default_rng(11), 20.0, FPS)
    b = compose_motion(np.random.default_rng(11), 20.0, FPS)
    c = compose_motion(np.random.default_rng(12), 20.0, FPS)
    assert a.n_frames == 600
    np.testing.assert_array_equal(a.poses, b.poses)
    np.testing.assert_array_equal(a.trans, b.trans)
    assert not np.array_equal(a.poses, c.poses)
    for m in (a, c):
        assert check_limits(m.poses, tol_deg=1.0) == []
        w = angular_speed(m.poses, FPS).max(axis=1)  # (T-1,)
        assert np.degrees(w.max() / FPS) < 30.0
        # trans: continuous position and velocity (max speed of any motion ~4 m/s)
        step = np.diff(m.trans, axis=0)
        assert np.linalg.norm(step[:, [0, 2]], axis=1).max() < 4.0 / FPS
        assert np.abs(np.diff(step[:, [0, 2]], axis=0)).max() < 0.02


def test_compose_seams_as_smooth_as_the_segments() -> None:
    names = ["jumping_jacks", "squat", "walk", "arm_raises"]
    m = compose_motion(np.random.default_rng(3), 24.0, FPS, names=names, segment_seconds=(3.0, 4.0))
    seg = m.segments()
    assert len(seg) >= 4 and {s[2] for s in seg} <= set(names)
    w = angular_speed(m.poses, FPS).max(axis=1)
    for (s0, e0, _), (s1, e1, _) in zip(seg[:-1], seg[1:]):
        inside = max(w[s0 + 15 : e0 - 15].max(initial=0), w[s1 + 15 : e1 - 16].max(initial=0))
        seam = w[max(0, e0 - 15) : e0 + 15].max()
        assert seam <= inside + 5.5, (seam, inside)


def test_compose_carries_heading_and_position() -> None:
    m = compose_motion(
        np.random.default_rng(5),
        12.0,
        FPS,
        names=["walk"],
        direction=90.0,
        start_xz=(1.0, 2.0),
        params={"walk": {"speed": 1.2, "turn_rate": 0.0}},
    )
    np.testing.assert_allclose(m.trans[0, [0, 2]], [1.0, 2.0], atol=0.03)
    d = m.trans[-1, [0, 2]] - m.trans[0, [0, 2]]
    assert d[0] > 0.9 * 1.2 * 12.0 * 0.95 and abs(d[1]) < 1.0  # kept walking towards +x
    with pytest.raises(KeyError):
        compose_motion(np.random.default_rng(0), 2.0, FPS, names=["moonwalk"])


# ------------------------------------------------------------------ paths
def test_random_path_reaches_goal_and_returns() -> None:
    m = random_path_motion(np.random.default_rng(0), 24.0, FPS, (-5.0, 0.0), (5.0, 1.0), speed=1.3, waypoints=1)
    xz = m.trans[:, [0, 2]]
    np.testing.assert_allclose(xz[0], [-5.0, 0.0], atol=0.03)
    d_goal = np.linalg.norm(xz - [5.0, 1.0], axis=1)
    assert d_goal.min() < 0.6
    first = int(np.argmax(d_goal < 0.6))
    assert np.linalg.norm(xz[first:] - [-5.0, 0.0], axis=1).min() < 1.5  # walked back
    assert check_limits(m.poses) == []


def test_random_path_stop_ends_standing_at_goal() -> None:
    m = random_path_motion(np.random.default_rng(1), 14.0, FPS, (0.0, 0.0), (0.0, 6.0), speed=1.2, on_arrival="stop")
    assert np.linalg.norm(m.trans[-1, [0, 2]] - [0.0, 6.0]) < 0.5
    assert np.linalg.norm(m.trans[-1, [0, 2]] - m.trans[-10, [0, 2]]) < 0.01
    assert m.labels[-1] == "stand" and m.labels[0] == "walk"


# ------------------------------------------------------------------ Motion container
def test_motion_resample_slice_concat() -> None:
    t = np.arange(120) / 120.0
    poses = np.zeros((120, 24, 3), np.float32)
    poses[:, J["left_knee"], 0] = np.radians(90.0) * t  # constant angular rate
    trans = np.stack([t, np.ones_like(t), 2 * t], -1)
    m = Motion("ramp", 120.0, poses, trans)
    r = m.resample(30.0)
    assert r.n_frames == 30 and abs(r.duration_s - m.duration_s) < 1e-9
    np.testing.assert_allclose(np.degrees(r.poses[:, J["left_knee"], 0]), 90.0 * np.arange(30) / 30.0, atol=1e-3)
    np.testing.assert_allclose(r.trans[:, 2], 2 * np.arange(30) / 30.0, atol=1e-6)
    assert r.resample(120.0).n_frames == 120
    s = m.slice(10, 20)
    assert s.n_frames == 10 and s.fps == 120.0
    c = s.concat(s, name="twice")
    assert c.n_frames == 20 and c.name == "twice" and c.segments() == [(0, 20, "ramp")]
    with pytest.raises(ValueError):
        Motion("bad", 30.0, np.zeros((5, 24, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        s.concat(r)


def test_motion_labels_from_segments() -> None:
    m = Motion("x", 10.0, np.zeros((6, 24, 3)), np.zeros((6, 3)), [(0, 2, "a"), (2, 6, "b")])
    assert m.segments() == [(0, 2, "a"), (2, 6, "b")]


def test_pelvis_height_scales_the_body() -> None:
    m = MOTIONS["walk"](np.random.default_rng(0), 3.0, FPS, pelvis_height=0.75)
    assert 0.68 < m.trans[:, 1].mean() < 0.76


# ------------------------------------------------------------------ joint limits
def test_joint_limits_table_and_clamp() -> None:
    # documented ranges, right side mirrored
    np.testing.assert_array_equal(LIMITS_DEG[J["left_knee"], 0], [-5.0, 150.0])
    np.testing.assert_array_equal(LIMITS_DEG[J["left_hip"], 2], [-30.0, 50.0])
    np.testing.assert_array_equal(LIMITS_DEG[J["right_hip"], 2], [-50.0, 30.0])
    np.testing.assert_array_equal(LIMITS_DEG[J["right_elbow"], 1], [-5.0, 150.0])
    poses = np.zeros((3, 24, 3))
    poses[0, J["left_knee"], 0] = np.radians(-20.0)  # hyperextended knee
    poses[1, J["right_elbow"], 1] = np.radians(120.0)  # flexed right elbow: fine
    poses[2, J["left_hip"], 0] = np.radians(-140.0)  # hip flexed beyond 125
    v = check_limits(poses)
    assert {(x.frame, x.joint, x.axis) for x in v} == {(0, "left_knee", "x"), (2, "left_hip", "x")}
    assert abs(v[0].excess_deg - 15.0) < 1e-6  # worst first
    c = clamp(poses)
    assert check_limits(c) == []
    np.testing.assert_allclose(np.degrees(c[0, J["left_knee"], 0]), -5.0, atol=1e-4)
    np.testing.assert_allclose(c[1], poses[1], atol=1e-6)  # within limits: untouched


def test_sign_conventions_on_the_skeleton() -> None:
    """Knees bend backwards, hips flex forwards, squats/sits put the pelvis behind the feet."""
    m = MOTIONS["walk"](np.random.default_rng(0), 3.0, FPS, variation=0.0)  # facing +z
    fk = forward_kinematics(m.poses, m.trans, rest_joints(0.93))
    t = int(_euler(m, "left_knee", 0).argmax())
    assert fk[t, J["left_ankle"], 2] < fk[t, J["left_knee"], 2] - 0.15  # shank swings back
    t = int((-_euler(m, "left_hip", 0)).argmax())
    assert fk[t, J["left_knee"], 2] > m.trans[t, 2] + 0.1  # thigh swings forward
    assert fk[:, J["head"], 1].min() > 1.4 and fk[:, J["left_wrist"], 1].max() < 1.0  # upright, arms down
    s = MOTIONS["squat"](np.random.default_rng(0), 2.5, FPS, variation=0.0)
    fk = forward_kinematics(s.poses, s.trans, rest_joints(0.93))
    t = int(s.trans[:, 1].argmin())
    assert fk[t, J["left_knee"], 2] > fk[t, J["left_ankle"], 2] + 0.1 > s.trans[t, 2] + 0.1
    s = MOTIONS["sit_to_stand"](np.random.default_rng(0), 5.0, FPS, variation=0.0)
    fk = forward_kinematics(s.poses, s.trans, rest_joints(0.93))
    assert abs(fk[0, J["left_knee"], 1] - s.trans[0, 1]) < 0.12  # thighs horizontal when seated
    assert fk[0, J["left_knee"], 2] - s.trans[0, 2] > 0.3
