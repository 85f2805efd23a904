"""Plausible human joint limits for SMPL local rotations, in degrees.

Each joint's local rotation (SMPL axis-angle, parent frame) is decomposed as intrinsic Euler
angles about its x, y and z axes, ``R = Rx(a) @ Ry(b) @ Rz(c)`` (scipy ``as_euler("XYZ")``;
the middle angle lies in [-90, 90]), except the elbows, whose flexion about y reaches 150 deg
and therefore comes first: ``R = Ry(b) @ Rz(c) @ Rx(a)`` (order "YZX").  Angles are always
reported in (x, y, z) slots.
At SMPL's zero pose every joint frame is aligned with the body frame: x = the body's left,
y = up, z = forward.  With that, for the LEFT side (the right side is the mirror image:
same x range, y and z ranges negated and swapped):

============  =====================================  ====================================
joint         meaning of the angles                   limits a (x), b (y), c (z)
============  =====================================  ====================================
hip           x<0 flexion (thigh forward), x>0         x -125..30, y -45..45, z -30..50
              extension; z>0 abduction; y rotation
knee          x>0 flexion; x<0 hyperextension          x -5..150, y -30..30, z -10..10
ankle         x<0 dorsiflexion, x>0 plantarflexion     x -35..50, y -25..25, z -25..25
foot (toes)   x<0 toe extension                        x -45..30, y -10..10, z -15..15
spine1/2/3    x>0 forward bend (each segment)          x -15..35, y -20..20, z -20..20
neck          x>0 flexion                              x -40..45, y -45..45, z -30..30
head          x>0 nod down                             x -30..40, y -40..40, z -25..25
collar        z>0 elevation, y shrug forward/back      x -20..20, y -25..25, z -15..35
shoulder      zero = T-pose; z<0 lowers the arm        x -170..70, y -90..60, z -110..100
              (-70..-90 = arms at the sides), z>0
              raises it above the shoulder; x<0
              swings a hanging arm forward; y
              horizontal flexion (y<0 forward)
elbow         y<0 flexion (left), x forearm twist      x -90..90, y -150..5, z -15..15
wrist         z flexion/extension, y deviation,         x -90..90, y -40..40, z -80..80
              x twist
hand          fingers as a block                       x -45..45, y -30..30, z -90..45
============  =====================================  ====================================

The root (joint 0, global orientation) is not limited.  A knee flexion of 0..150 deg with at
most 5 deg hyperextension, an elbow of 0..150 deg, hips flexing to 125 deg are the ranges
quoted in clinical range-of-motion tables (AAOS); the twist/deviation ranges are generous.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hmrflow.priors.skeleton import JOINT_NAMES, N_JOINTS

_LEFT_OR_CENTER: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "hip": ((-125.0, 30.0), (-45.0, 45.0), (-30.0, 50.0)),
    "knee": ((-5.0, 150.0), (-30.0, 30.0), (-10.0, 10.0)),
    "ankle": ((-35.0, 50.0), (-25.0, 25.0), (-25.0, 25.0)),
    "foot": ((-45.0, 30.0), (-10.0, 10.0), (-15.0, 15.0)),
    "spine1": ((-15.0, 35.0), (-20.0, 20.0), (-20.0, 20.0)),
    "spine2": ((-15.0, 35.0), (-20.0, 20.0), (-20.0, 20.0)),
    "spine3": ((-15.0, 35.0), (-20.0, 20.0), (-20.0, 20.0)),
    "neck": ((-40.0, 45.0), (-45.0, 45.0), (-30.0, 30.0)),
    "head": ((-30.0, 40.0), (-40.0, 40.0), (-25.0, 25.0)),
    "collar": ((-20.0, 20.0), (-25.0, 25.0), (-15.0, 35.0)),
    "shoulder": ((-170.0, 70.0), (-90.0, 60.0), (-110.0, 100.0)),
    "elbow": ((-90.0, 90.0), (-150.0, 5.0), (-15.0, 15.0)),
    "wrist": ((-90.0, 90.0), (-40.0, 40.0), (-80.0, 80.0)),
    "hand": ((-45.0, 45.0), (-30.0, 30.0), (-90.0, 45.0)),
}


def _build_table() -> np.ndarray:
    """``(24, 3, 2)`` [lo, hi] degrees per joint and Euler axis; root = (-inf, inf)."""
    table = np.empty((N_JOINTS, 3, 2), dtype=np.float64)
    table[:, :, 0] = -np.inf
    table[:, :, 1] = np.inf
    for j, name in enumerate(JOINT_NAMES):
        if j == 0:
            continue
        side = "left" if name.startswith("left_") else "right" if name.startswith("right_") else "center"
        base = name.split("_", 1)[1] if side != "center" else name
        lim = np.array(_LEFT_OR_CENTER[base], dtype=np.float64)  # (3, 2)
        if side == "right":  # mirror x -> -x: (ax, ay, az) -> (ax, -ay, -az)
            lim[1:] = -lim[1:, ::-1]
        table[j] = lim
    return table


#: ``(24, 3, 2)`` lower/upper Euler (intrinsic XYZ) limits in degrees; row 0 (root) unbounded.
LIMITS_DEG: np.ndarray = _build_table()


@dataclass(frozen=True)
class LimitViolation:
    """One frame/joint/axis outside its range (angles in degrees)."""

    frame: int
    joint: str
    axis: str
    value_deg: float
    lo_deg: float
    hi_deg: float

    @property
    def excess_deg(self) -> float:
        """How far outside the range (> 0)."""
        return max(self.lo_deg - self.value_deg, self.value_deg - self.hi_deg)


#: per-joint intrinsic Euler order (the largest range on the first or last axis).
EULER_ORDERS: tuple[str, ...] = tuple("YZX" if name.endswith("_elbow") else "XYZ" for name in JOINT_NAMES)
_SLOTS = {order: ["XYZ".index(ax) for ax in order] for order in set(EULER_ORDERS)}


def _as_pose_array(poses: np.ndarray) -> np.ndarray:
    p = np.asarray(poses, dtype=np.float64)
    if p.ndim == 2 and p.shape[-1] == 3 * N_JOINTS:
        p = p.reshape(-1, N_JOINTS, 3)
    if p.ndim != 3 or p.shape[1:] != (N_JOINTS, 3):
        raise ValueError(f"poses must be (T, {N_JOINTS}, 3) or (T, {3 * N_JOINTS}), got {p.shape}")
    return p


def pose_euler_deg(poses: np.ndarray) -> np.ndarray:
    """``(T, 24, 3)`` axis-angle -> ``(T, 24, 3)`` Euler degrees in (x, y, z) slots, each joint
    decomposed in its :data:`EULER_ORDERS` order."""
    from scipy.spatial.transform import Rotation

    p = _as_pose_array(poses)
    out = np.empty_like(p)
    for order, slots in _SLOTS.items():
        js = [j for j, o in enumerate(EULER_ORDERS) if o == order]
        with warnings.catch_warnings():  # gimbal lock only at the limits of the middle angle: harmless
            warnings.simplefilter("ignore", UserWarning)
            ang = Rotation.from_rotvec(p[:, js].reshape(-1, 3)).as_euler(order, degrees=True)
        tmp = np.empty_like(ang)
        tmp[:, slots] = ang
        out[:, js] = tmp.reshape(p.shape[0], len(js), 3)
    return out


def euler_deg_to_pose(euler_deg: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pose_euler_deg`: ``(T, 24, 3)`` Euler degrees (x, y, z slots, per-joint
    order) -> ``(T, 24, 3)`` float64 axis-angle."""
    from scipy.spatial.transform import Rotation

    e = np.asarray(euler_deg, dtype=np.float64)
    if e.ndim != 3 or e.shape[1:] != (N_JOINTS, 3):
        raise ValueError(f"euler_deg must be (T, {N_JOINTS}, 3), got {e.shape}")
    out = np.empty_like(e)
    for order, slots in _SLOTS.items():
        js = [j for j, o in enumerate(EULER_ORDERS) if o == order]
        ang = e[:, js][..., slots].reshape(-1, 3)
        out[:, js] = Rotation.from_euler(order, ang, degrees=True).as_rotvec().reshape(e.shape[0], len(js), 3)
    return out


def excess_deg(poses: np.ndarray) -> np.ndarray:
    """``(T, 24, 3)`` degrees by which each Euler angle lies outside its range (0 inside)."""
    e = pose_euler_deg(poses)
    lo, hi = LIMITS_DEG[None, :, :, 0], LIMITS_DEG[None, :, :, 1]
    return np.maximum(np.maximum(lo - e, e - hi), 0.0)


def check_limits(poses: np.ndarray, tol_deg: float = 0.5, max_report: int = 1000) -> list[LimitViolation]:
    """List the angles of ``poses`` ``(T, 24, 3)`` outside :data:`LIMITS_DEG` by more than ``tol_deg``.

    Returns at most ``max_report`` violations, worst first; an empty list means within limits.
    """
    e = pose_euler_deg(poses)
    lo, hi = LIMITS_DEG[None, :, :, 0], LIMITS_DEG[None, :, :, 1]
    over = np.maximum(np.maximum(lo - e, e - hi), 0.0)
    frames, joints, axes = np.nonzero(over > tol_deg)
    order = np.argsort(-over[frames, joints, axes], kind="stable")[:max_report]
    return [
        LimitViolation(
            frame=int(frames[i]),
            joint=JOINT_NAMES[joints[i]],
            axis="xyz"[axes[i]],
            value_deg=float(e[frames[i], joints[i], axes[i]]),
            lo_deg=float(LIMITS_DEG[joints[i], axes[i], 0]),
            hi_deg=float(LIMITS_DEG[joints[i], axes[i], 1]),
        )
        for i in order
    ]


def clamp(poses: np.ndarray) -> np.ndarray:
    """Clamp every joint's Euler angles into :data:`LIMITS_DEG` (root untouched).

    Joints already inside their range come back unchanged.  Returns float32 ``(T, 24, 3)``
    axis-angle.
    """
    p = _as_pose_array(poses)
    e = pose_euler_deg(p)
    ec = np.clip(e, LIMITS_DEG[None, :, :, 0], LIMITS_DEG[None, :, :, 1])
    changed = np.any(ec != e, axis=-1)  # (T, 24)
    out = p.copy()
    if changed.any():
        out[changed] = euler_deg_to_pose(ec)[changed]
    return out.astype(np.float32)
