"""A body-model-free rest skeleton and forward kinematics for the motion library.

The joint positions approximate SMPL's neutral template (pelvis at the origin, y up, body
facing +z, x = the body's left), in metres.  They are only used to keep feet on the ground,
to place the root of feet-planted motions and in tests (arm heights, foot sliding); the
renderer re-places the real mesh on the ground itself.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from hmrflow.priors.skeleton import JOINT_INDEX, N_JOINTS, PARENTS

#: pelvis height above the ground of the reference skeleton at zero pose (m).
REFERENCE_PELVIS_HEIGHT = 0.93

#: ``(24, 3)`` rest joint positions relative to the pelvis (approximate SMPL neutral).
REST_JOINTS: np.ndarray = np.array(
    [
        [0.000, 0.000, 0.000],  # pelvis
        [0.060, -0.090, 0.000],  # left_hip
        [-0.060, -0.090, 0.000],  # right_hip
        [0.000, 0.110, -0.020],  # spine1
        [0.100, -0.460, 0.005],  # left_knee
        [-0.100, -0.460, 0.005],  # right_knee
        [0.000, 0.240, -0.010],  # spine2
        [0.090, -0.850, -0.035],  # left_ankle
        [-0.090, -0.850, -0.035],  # right_ankle
        [0.000, 0.290, 0.010],  # spine3
        [0.110, -0.905, 0.085],  # left_foot
        [-0.110, -0.905, 0.085],  # right_foot
        [0.000, 0.500, -0.020],  # neck
        [0.075, 0.400, -0.010],  # left_collar
        [-0.075, 0.400, -0.010],  # right_collar
        [0.000, 0.570, 0.030],  # head
        [0.170, 0.430, -0.020],  # left_shoulder
        [-0.170, 0.430, -0.020],  # right_shoulder
        [0.430, 0.420, -0.040],  # left_elbow
        [-0.430, 0.420, -0.040],  # right_elbow
        [0.680, 0.430, -0.040],  # left_wrist
        [-0.680, 0.430, -0.040],  # right_wrist
        [0.760, 0.420, -0.050],  # left_hand
        [-0.760, 0.420, -0.050],  # right_hand
    ],
    dtype=np.float64,
)

#: height above the ground (m, reference scale) of the ankle and foot (ball) joints when the
#: foot is flat: the ground-contact points used by :func:`ground_offset`.
ANKLE_CLEARANCE = REFERENCE_PELVIS_HEIGHT + REST_JOINTS[JOINT_INDEX["left_ankle"], 1]  # 0.08
FOOT_CLEARANCE = REFERENCE_PELVIS_HEIGHT + REST_JOINTS[JOINT_INDEX["left_foot"], 1]  # 0.025

FOOT_JOINTS = (
    JOINT_INDEX["left_ankle"],
    JOINT_INDEX["right_ankle"],
    JOINT_INDEX["left_foot"],
    JOINT_INDEX["right_foot"],
)


def rest_joints(pelvis_height: float = REFERENCE_PELVIS_HEIGHT) -> np.ndarray:
    """``(24, 3)`` rest skeleton scaled so that the pelvis stands ``pelvis_height`` above ground."""
    return REST_JOINTS * (pelvis_height / REFERENCE_PELVIS_HEIGHT)


def forward_kinematics(poses: np.ndarray, trans: np.ndarray, rest: np.ndarray | None = None) -> np.ndarray:
    """World joint positions of the skeleton.

    Args:
        poses: ``(T, 24, 3)`` axis-angle local rotations (joint 0 global).
        trans: ``(T, 3)`` pelvis position (the library treats ``transl`` as the pelvis position).
        rest: ``(24, 3)`` rest joints relative to the pelvis (default :data:`REST_JOINTS`).

    Returns:
        ``(T, 24, 3)`` float64 joint positions.
    """
    rest = REST_JOINTS if rest is None else np.asarray(rest, dtype=np.float64)
    p = np.asarray(poses, dtype=np.float64)
    t_len = p.shape[0]
    local = Rotation.from_rotvec(p.reshape(-1, 3)).as_matrix().reshape(t_len, N_JOINTS, 3, 3)
    glob = np.empty_like(local)
    pos = np.empty((t_len, N_JOINTS, 3), dtype=np.float64)
    glob[:, 0] = local[:, 0]
    pos[:, 0] = np.asarray(trans, dtype=np.float64)
    for j in range(1, N_JOINTS):
        par = PARENTS[j]
        glob[:, j] = glob[:, par] @ local[:, j]
        pos[:, j] = pos[:, par] + glob[:, par] @ (rest[j] - rest[par])
    return pos


def contact_heights(poses: np.ndarray, pelvis_height: float = REFERENCE_PELVIS_HEIGHT) -> np.ndarray:
    """``(T, 4)`` height of the contact points (left/right ankle, left/right ball of the foot)
    above their flat-foot clearance, for a pelvis at height 0 (so ``-h`` is the pelvis height
    that puts that point on the ground).  Order: :data:`FOOT_JOINTS`."""
    scale = pelvis_height / REFERENCE_PELVIS_HEIGHT
    rel = forward_kinematics(poses, np.zeros((len(poses), 3)), rest_joints(pelvis_height))
    clear = np.array([ANKLE_CLEARANCE, ANKLE_CLEARANCE, FOOT_CLEARANCE, FOOT_CLEARANCE]) * scale
    return rel[:, FOOT_JOINTS, 1] - clear[None]


def ground_offset(poses: np.ndarray, pelvis_height: float = REFERENCE_PELVIS_HEIGHT) -> np.ndarray:
    """``(T,)`` pelvis height that puts the lowest foot contact point on the ground (y = 0).

    Contact points are the ankles (``ANKLE_CLEARANCE`` above the sole) and the balls of the
    feet (``FOOT_CLEARANCE``), scaled with ``pelvis_height``.
    """
    return -contact_heights(poses, pelvis_height).min(axis=1)


def plant_feet(
    poses: np.ndarray,
    pelvis_height: float,
    anchor: tuple[int, ...] | np.ndarray | None = None,
    start_xz: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Root translation ``(T, 3)`` that keeps the feet on the ground and fixed on the floor.

    Height from :func:`ground_offset`.  Horizontally the root starts at ``start_xz`` and then
    moves so that the anchor point stays where it is: a body that bends or sits moves its
    pelvis while its planted feet stay put.

    Args:
        poses: ``(T, 24, 3)`` axis-angle (root included).
        pelvis_height: pelvis height at zero pose (m).
        anchor: joints whose mean is planted (default: both ankles), or ``(T, 24)`` per-frame
            weights (rows are normalised), so the planted foot may change over time: the root
            follows frame-to-frame displacements of the anchor, never jumps.
        start_xz: root position on the ground at frame 0.
    """
    n = len(poses)
    if anchor is None:
        anchor = (JOINT_INDEX["left_ankle"], JOINT_INDEX["right_ankle"])
    if isinstance(anchor, tuple):
        w = np.zeros((n, N_JOINTS))
        w[:, list(anchor)] = 1.0
    else:
        w = np.asarray(anchor, dtype=np.float64)
        if w.shape != (n, N_JOINTS):
            raise ValueError(f"anchor weights must be ({n}, {N_JOINTS}), got {w.shape}")
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    rel = forward_kinematics(poses, np.zeros((n, 3)), rest_joints(pelvis_height))
    # displacement of the (current) anchor point between consecutive frames, same weights
    d = np.einsum("tj,tjk->tk", w[1:], rel[1:] - rel[:-1])  # (T-1, 3)
    trans = np.zeros((n, 3))
    trans[1:, 0] = -np.cumsum(d[:, 0])
    trans[1:, 2] = -np.cumsum(d[:, 2])
    trans[:, 0] += start_xz[0]
    trans[:, 2] += start_xz[1]
    trans[:, 1] = ground_offset(poses, pelvis_height)
    return trans
