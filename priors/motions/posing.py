"""Building blocks for procedural poses: per-joint Euler channels, a standing posture,
periodic key-frame curves, person-to-person style variation and the final assembly into a
:class:`~hmrflow.priors.motions.core.Motion`.

Sign conventions of the SMPL local x rotation (intrinsic XYZ Euler, see joint_limits):
hip x = -flexion, knee x = +flexion, ankle x = -dorsiflexion, spine/neck/head x = +forward
bend, shoulder x = -forward swing of a hanging arm.  For the right side y and z flip sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

from hmrflow.priors.motions.core import Motion, euler_to_rotvec
from hmrflow.priors.skeleton import JOINT_INDEX, N_JOINTS

J = JOINT_INDEX
X, Y, Z = 0, 1, 2


def periodic_curve(keys: list[tuple[float, float]]) -> CubicSpline:
    """C2 periodic cubic spline through ``(phase, value)`` keys on [0, 1) (period 1)."""
    ph = np.array([k[0] for k in keys] + [keys[0][0] + 1.0], dtype=np.float64)
    val = np.array([k[1] for k in keys] + [keys[0][1]], dtype=np.float64)
    return CubicSpline(ph, val, bc_type="periodic")


def eval_periodic(curve: CubicSpline, phase: np.ndarray) -> np.ndarray:
    """Evaluate a period-1 spline at any phase (wrapped into its domain)."""
    x0 = curve.x[0]
    return curve(x0 + np.mod(np.asarray(phase, dtype=np.float64) - x0, 1.0))


@dataclass(frozen=True)
class Style:
    """Per-person variation of a motion (multiplicative gains and offsets in degrees)."""

    leg_gain: float = 1.0
    arm_gain: float = 1.0
    arm_hang_deg: float = 72.0  # shoulder z magnitude of arms hanging at the sides
    elbow_rest_deg: float = 12.0
    lean_deg: float = 0.0  # extra forward trunk lean
    head_pitch_deg: float = 0.0

    @staticmethod
    def sample(rng: np.random.Generator, variation: float = 1.0) -> "Style":
        """A random style; ``variation=0`` gives the template exactly."""
        v = float(variation)
        return Style(
            leg_gain=float(1.0 + v * rng.uniform(-0.06, 0.06)),
            arm_gain=float(1.0 + v * rng.uniform(-0.25, 0.25)),
            arm_hang_deg=float(72.0 + v * rng.uniform(-6.0, 6.0)),
            elbow_rest_deg=float(12.0 + v * rng.uniform(-6.0, 8.0)),
            lean_deg=float(v * rng.uniform(-2.0, 3.0)),
            head_pitch_deg=float(v * rng.uniform(-4.0, 6.0)),
        )


def standing_euler(n: int, style: Style) -> np.ndarray:
    """``(n, 24, 3)`` Euler degrees of a relaxed standing posture (arms at the sides)."""
    e = np.zeros((n, N_JOINTS, 3), dtype=np.float64)
    e[:, J["left_shoulder"], Z] = -style.arm_hang_deg
    e[:, J["right_shoulder"], Z] = style.arm_hang_deg
    e[:, J["left_elbow"], Y] = -style.elbow_rest_deg
    e[:, J["right_elbow"], Y] = style.elbow_rest_deg
    e[:, J["spine3"], X] = 0.5 * style.lean_deg
    e[:, J["spine2"], X] = 0.5 * style.lean_deg
    e[:, J["head"], X] = style.head_pitch_deg
    return e


def set_bilateral(e: np.ndarray, name: str, axis: int, left: np.ndarray, right: np.ndarray | None = None) -> None:
    """Write one anatomical channel for both sides; ``right`` defaults to ``left``.

    Values are anatomical (same meaning on both sides); the right side's y and z are mirrored.
    """
    right = left if right is None else right
    sign = 1.0 if axis == X else -1.0
    e[:, J[f"left_{name}"], axis] = left
    e[:, J[f"right_{name}"], axis] = sign * np.asarray(right)


def add_bilateral(e: np.ndarray, name: str, axis: int, left: np.ndarray, right: np.ndarray | None = None) -> None:
    """Like :func:`set_bilateral` but adds to the channel."""
    right = left if right is None else right
    sign = 1.0 if axis == X else -1.0
    e[:, J[f"left_{name}"], axis] += left
    e[:, J[f"right_{name}"], axis] += sign * np.asarray(right)


def root_rotvec(
    heading_rad: np.ndarray, tilt_deg: np.ndarray = 0.0, yaw_deg: np.ndarray = 0.0, roll_deg: np.ndarray = 0.0
) -> np.ndarray:
    """``(T, 3)`` global orientation: heading about y, then pelvis yaw, forward tilt (about x,
    > 0 leans forward) and roll (about z, > 0 drops the body's right side)."""
    heading_rad = np.atleast_1d(np.asarray(heading_rad, dtype=np.float64))
    n = heading_rad.shape[0]
    ang = np.stack(
        [
            heading_rad + np.deg2rad(np.broadcast_to(yaw_deg, (n,))),
            np.deg2rad(np.broadcast_to(tilt_deg, (n,))),
            np.deg2rad(np.broadcast_to(roll_deg, (n,))),
        ],
        axis=-1,
    )
    return Rotation.from_euler("YXZ", ang).as_rotvec()


def assemble(
    name: str, fps: float, euler_deg: np.ndarray, root: np.ndarray, trans: np.ndarray, labels: object = None
) -> Motion:
    """Euler channels ``(T, 24, 3)`` (row 0 ignored) + root axis-angle ``(T, 3)`` -> Motion."""
    poses = euler_to_rotvec(euler_deg)
    poses[:, 0] = root
    return Motion(name, fps, poses, trans, labels)


def frame_times(seconds: float, fps: float) -> np.ndarray:
    """``(T,)`` times of ``round(seconds * fps)`` frames (at least 2)."""
    if not (seconds > 0 and fps > 0):
        raise ValueError(f"seconds and fps must be > 0, got seconds={seconds}, fps={fps}")
    n = max(2, int(round(seconds * fps)))
    return np.arange(n, dtype=np.float64) / fps


def rep_phase(t: np.ndarray, period_s: float, phase: float = 0.0) -> np.ndarray:
    """Phase in cycles (unwrapped) of a repetitive exercise: ``phase + t / period``."""
    return phase + t / period_s


def rep_profile(phase: np.ndarray, hold: float = 0.15) -> np.ndarray:
    """0 -> 1 -> 0 per cycle, smooth (C1), holding at 0 and at 1 for ``hold`` of the cycle each.

    ``phase`` in cycles; the peak (1) is reached at mid-cycle.
    """
    p = np.mod(phase, 1.0)
    move = (1.0 - 2.0 * hold) / 2.0  # length of the down (or up) movement
    up = np.clip((p - hold / 2.0) / move, 0.0, 1.0)
    down = np.clip((p - 0.5 - hold / 2.0) / move, 0.0, 1.0)
    ease = lambda x: 0.5 - 0.5 * np.cos(np.pi * x)  # noqa: E731
    return ease(up) - ease(down)


def ramp_in_out(t: np.ndarray, seconds: float, ramp_s: float) -> np.ndarray:
    """Envelope 0 -> 1 over ``ramp_s`` at the start and 1 -> 0 at the end (smooth)."""
    if ramp_s <= 0:
        return np.ones_like(t)
    a = np.clip(t / ramp_s, 0, 1)
    b = np.clip((seconds - t) / ramp_s, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * a)) * (0.5 - 0.5 * np.cos(np.pi * b))
