"""Anatomical joint angles: known rotations give known angles; signs are mirrored per side."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmrflow.jobs.export.angles import ANGLE_GROUPS, ANGLE_NAMES, euler_deg, group_rotation, joint_angles
from hmrflow.priors.skeleton import JOINT_INDEX

UPRIGHT = np.diag([1.0, -1.0, -1.0])  # root: upright, facing the camera (OpenCV y down)


def pose(**joint_rots: tuple[str, float]) -> np.ndarray:
    """(1, 24, 3, 3): identity joints, upright root, and ``joint=(axis, degrees)`` rotations."""
    rot = np.tile(np.eye(3), (1, 24, 1, 1))
    rot[0, 0] = UPRIGHT
    for joint, (axis, deg) in joint_rots.items():
        rot[0, JOINT_INDEX[joint]] = Rotation.from_euler(axis, deg, degrees=True).as_matrix()
    return rot


def nonzero(angles: dict[str, np.ndarray], tol: float = 1e-6) -> dict[str, float]:
    return {k: round(float(v[0]), 6) for k, v in angles.items() if abs(v[0]) > tol}


def test_rest_standing_pose_is_zero_except_arms() -> None:
    # SMPL's rest arms are horizontal (T-pose): 90 deg abduction, everything else 0
    assert nonzero(joint_angles(pose())) == {"shoulder_abduction_l": 90.0, "shoulder_abduction_r": 90.0}


def test_arms_down_is_all_zero() -> None:
    got = joint_angles(pose(left_shoulder=("z", -90.0), right_shoulder=("z", 90.0)))
    assert nonzero(got) == {}
    assert list(got) == list(ANGLE_NAMES)


@pytest.mark.parametrize("side,suffix", [("left", "_l"), ("right", "_r")])
def test_pure_knee_flexion(side: str, suffix: str) -> None:
    # SMPL knee flexion: +x rotation moves the shank (along -y) backward (-z)
    assert nonzero(joint_angles(pose(**{f"{side}_knee": ("x", 60.0)}))) == {
        f"knee_flexion{suffix}": 60.0,
        "shoulder_abduction_l": 90.0,
        "shoulder_abduction_r": 90.0,
    }


@pytest.mark.parametrize("side,suffix,ab_sign", [("left", "_l", 1.0), ("right", "_r", -1.0)])
def test_hip_sign_conventions(side: str, suffix: str, ab_sign: float) -> None:
    # flexion = thigh forward = rotation about -x; check it geometrically too
    r = Rotation.from_euler("x", -45.0, degrees=True).as_matrix()
    assert (r @ [0.0, -1.0, 0.0])[2] > 0  # the knee (below the hip) moves forward (+z)
    got = joint_angles(pose(**{f"{side}_hip": ("x", -45.0)}))
    assert got[f"hip_flexion{suffix}"][0] == pytest.approx(45.0)
    assert got[f"hip_adduction{suffix}"][0] == pytest.approx(0.0, abs=1e-9)
    # abduction moves the leg away from the midline: +z rotation for the left (x = left)
    got = joint_angles(pose(**{f"{side}_hip": ("z", 20.0 * ab_sign)}))
    assert got[f"hip_adduction{suffix}"][0] == pytest.approx(-20.0)
    assert got[f"hip_flexion{suffix}"][0] == pytest.approx(0.0, abs=1e-9)
    # internal rotation turns the toes (+z) medially: toward -x on the left
    got = joint_angles(pose(**{f"{side}_hip": ("y", -30.0 * ab_sign)}))
    assert got[f"hip_rotation{suffix}"][0] == pytest.approx(30.0)


def test_combined_hip_rotation_decomposes_in_order() -> None:
    # R = Rx(-30) Rz(10) Ry(-15) on the left hip: flexion 30, abduction 10, internal rotation 15
    rot = pose()
    rot[0, JOINT_INDEX["left_hip"]] = Rotation.from_euler("XZY", [-30.0, 10.0, -15.0], degrees=True).as_matrix()
    got = joint_angles(rot)
    assert got["hip_flexion_l"][0] == pytest.approx(30.0)
    assert got["hip_adduction_l"][0] == pytest.approx(-10.0)
    assert got["hip_rotation_l"][0] == pytest.approx(15.0)


@pytest.mark.parametrize("side,suffix,s", [("left", "_l", 1.0), ("right", "_r", -1.0)])
def test_elbow_ankle_shoulder(side: str, suffix: str, s: float) -> None:
    assert joint_angles(pose(**{f"{side}_elbow": ("y", -70.0 * s)}))[f"elbow_flexion{suffix}"][0] == pytest.approx(70.0)
    assert joint_angles(pose(**{f"{side}_ankle": ("x", -15.0)}))[f"ankle_dorsiflexion{suffix}"][0] == pytest.approx(
        15.0
    )
    # arm hanging, then raised forward by 40 deg: shoulder flexion 40
    rot = pose(**{f"{side}_shoulder": ("z", -90.0 * s)})
    rot[0, JOINT_INDEX[f"{side}_shoulder"]] = (
        Rotation.from_euler("x", -40.0, degrees=True).as_matrix() @ rot[0, JOINT_INDEX[f"{side}_shoulder"]]
    )
    got = joint_angles(rot)
    assert got[f"shoulder_flexion{suffix}"][0] == pytest.approx(40.0)
    assert got[f"shoulder_abduction{suffix}"][0] == pytest.approx(0.0, abs=1e-9)
    # collar rotation counts for the shoulder (humerus relative to the thorax)
    rot = pose(**{f"{side}_collar": ("z", 30.0 * s)})
    assert joint_angles(rot)[f"shoulder_abduction{suffix}"][0] == pytest.approx(120.0)


def test_pelvis_and_trunk() -> None:
    rot = pose(spine1=("x", 10.0), spine2=("x", 10.0), spine3=("z", -5.0))
    got = joint_angles(rot)
    assert got["trunk_flexion"][0] == pytest.approx(20.0)
    assert got["trunk_bending"][0] == pytest.approx(5.0)
    # pelvis turned to its left by 25 deg (about the body's up axis)
    rot = pose()
    rot[0, 0] = UPRIGHT @ Rotation.from_euler("y", 25.0, degrees=True).as_matrix()
    assert nonzero(joint_angles(rot)).get("pelvis_rotation") == pytest.approx(25.0)


def test_euler_round_trip_and_unwrap() -> None:
    rng = np.random.default_rng(0)
    rot = Rotation.random(200, random_state=1).as_matrix().reshape(200, 1, 3, 3) * np.ones((1, 24, 1, 1))
    for g in ANGLE_GROUPS:
        m = group_rotation(rot, g)
        e = euler_deg(m, g.seq, unwrap=False)
        back = Rotation.from_euler(g.seq, e, degrees=True).as_matrix()
        np.testing.assert_allclose(back, m, atol=1e-9)
    # a knee angle sweeping through 180 deg stays continuous when unwrapped
    sweep = np.linspace(150.0, 210.0, 61)
    rot = np.tile(np.eye(3), (61, 24, 1, 1))
    rot[:, 0] = UPRIGHT
    rot[:, JOINT_INDEX["left_knee"]] = Rotation.from_euler("x", sweep[:, None], degrees=True).as_matrix()
    knee = joint_angles(rot)["knee_flexion_l"]
    assert np.abs(np.diff(knee)).max() < 1.5
    assert rng is not None


def test_angles_stay_continuous_through_the_euler_singularity() -> None:
    """A segment whose Euler solutions swap back and forth gives continuous, bounded angles that
    still describe the rotation."""
    from scipy.spatial.transform import Rotation

    from hmrflow.jobs.export.angles import euler_deg

    t = np.arange(300)
    # large first and third angles: the per-frame choice of the two solutions alternates, and
    # plain unwrapping of it piled half-turns up to 864 deg with 180 deg jumps
    truth = np.stack([100 * np.sin(t / 17), 60 * np.sin(t / 9 + 0.5), 100 * np.cos(t / 23)], 1)
    rot = Rotation.from_euler("XYZ", truth, degrees=True).as_matrix()
    ang = euler_deg(rot, "XYZ")
    assert np.abs(np.diff(ang, axis=0)).max() < 15.0  # no branch switches, no 360 jumps
    assert np.abs(ang).max() < 200.0  # nothing piles up
    back = Rotation.from_euler("XYZ", ang, degrees=True).as_matrix()
    np.testing.assert_allclose(back, rot, atol=1e-9)  # the same rotations
