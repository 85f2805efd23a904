"""The :class:`Motion` container and the rotation helpers every motion generator shares.

Conventions (docs/FORMATS.md): world frame y up, ground y = 0, metres; the body faces +z at
zero pose.  ``poses`` are SMPL local axis-angle rotations ``(T, 24, 3)`` (joint 0 = global
orientation in the world frame), ``trans`` the SMPL ``transl`` parameter ``(T, 3)``.

Angles inside the generators are per-joint Euler angles in degrees (x, y, z slots; intrinsic
``R = Rx @ Ry @ Rz`` except the elbows, see :data:`hmrflow.priors.joint_limits.EULER_ORDERS`),
the same decomposition :mod:`hmrflow.priors.joint_limits` checks, so a generator that keeps its
angles in the limit table is within limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from hmrflow.priors.joint_limits import euler_deg_to_pose, pose_euler_deg
from hmrflow.priors.skeleton import N_JOINTS

Segment = tuple[int, int, str]


def _as_labels(labels: object, n: int, default: str) -> np.ndarray:
    """Per-frame label array ``(n,)`` of str from an array, a list of segments or None."""
    if labels is None:
        return np.full(n, default, dtype=object)
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.shape[0] == n and labels.dtype != object:
        return labels.astype(str).astype(object)
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.shape[0] == n:
        return labels.copy()
    if isinstance(labels, (list, tuple)) and all(isinstance(s, (list, tuple)) and len(s) == 3 for s in labels):
        out = np.full(n, default, dtype=object)
        for start, end, name in labels:
            out[int(start) : int(end)] = str(name)
        return out
    if isinstance(labels, (list, tuple)) and len(labels) == n:
        return np.asarray([str(x) for x in labels], dtype=object)
    raise ValueError(f"labels must be ({n},) names or a list of (start, end, name) segments")


@dataclass(frozen=True, eq=False)
class Motion:
    """A body motion sampled at ``fps``.

    Attributes:
        name: what the motion is (e.g. ``"walk"`` or ``"compose"``).
        fps: frames per second.
        poses: ``(T, 24, 3)`` float32 axis-angle, SMPL local rotations, joint 0 in the world frame.
        trans: ``(T, 3)`` float32 SMPL ``transl`` in the world frame (y up, metres).
        labels: ``(T,)`` object array of segment names (one per frame); a list of
            ``(start, end, name)`` segments is accepted by the constructor and converted.
    """

    name: str
    fps: float
    poses: np.ndarray
    trans: np.ndarray
    labels: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        poses = np.asarray(self.poses, dtype=np.float32)
        if poses.ndim == 2 and poses.shape[1] == 3 * N_JOINTS:
            poses = poses.reshape(-1, N_JOINTS, 3)
        if poses.ndim != 3 or poses.shape[1:] != (N_JOINTS, 3):
            raise ValueError(f"Motion {self.name!r}: poses must be (T, {N_JOINTS}, 3), got {poses.shape}")
        trans = np.asarray(self.trans, dtype=np.float32)
        if trans.shape != (poses.shape[0], 3):
            raise ValueError(f"Motion {self.name!r}: trans must be ({poses.shape[0]}, 3), got {trans.shape}")
        if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
            raise ValueError(f"Motion {self.name!r}: poses/trans contain NaN or inf")
        if not float(self.fps) > 0:
            raise ValueError(f"Motion {self.name!r}: fps must be > 0, got {self.fps}")
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "poses", poses)
        object.__setattr__(self, "trans", trans)
        object.__setattr__(self, "labels", _as_labels(self.labels, poses.shape[0], self.name))

    # ------------------------------------------------------------------ basic facts
    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.poses.shape[0])

    @property
    def duration_s(self) -> float:
        """Duration in seconds, ``T / fps`` (each frame covers one sample interval)."""
        return self.n_frames / self.fps

    @property
    def times(self) -> np.ndarray:
        """``(T,)`` float64 frame times in seconds from 0."""
        return np.arange(self.n_frames, dtype=np.float64) / self.fps

    def segments(self) -> list[Segment]:
        """Runs of equal labels as ``(start, end, name)`` with ``end`` exclusive."""
        out: list[Segment] = []
        start = 0
        for i in range(1, self.n_frames + 1):
            if i == self.n_frames or self.labels[i] != self.labels[start]:
                out.append((start, i, str(self.labels[start])))
                start = i
        return out

    def rotations(self) -> Rotation:
        """All joint rotations as one scipy ``Rotation`` of length ``T * 24``."""
        return Rotation.from_rotvec(self.poses.reshape(-1, 3).astype(np.float64))

    # ------------------------------------------------------------------ editing
    def slice(self, start: int, stop: int | None = None, step: int = 1) -> "Motion":
        """Frames ``start:stop:step`` (``fps`` divided by ``step``)."""
        sl = slice(start, stop, step)
        poses = self.poses[sl]
        if poses.shape[0] == 0:
            raise ValueError(f"Motion {self.name!r}: slice({start}, {stop}, {step}) is empty")
        return Motion(self.name, self.fps / step, poses, self.trans[sl], self.labels[sl])

    def concat(self, *others: "Motion", name: str | None = None) -> "Motion":
        """Plain frame concatenation (same fps required; no blending or re-alignment).

        Use :func:`hmrflow.priors.motion_library.compose_motion` for smooth transitions.
        """
        for o in others:
            if abs(o.fps - self.fps) > 1e-6:
                raise ValueError(f"concat: fps differ ({self.fps} vs {o.fps}); resample first")
        ms = (self, *others)
        return Motion(
            name or self.name,
            self.fps,
            np.concatenate([m.poses for m in ms]),
            np.concatenate([m.trans for m in ms]),
            np.concatenate([m.labels for m in ms]),
        )

    def resample(self, fps: float) -> "Motion":
        """Resample to ``fps``: slerp per joint on SO(3), linear ``trans``, nearest-earlier labels.

        The duration ``T / fps`` is kept (new T = round(T * fps / self.fps)).
        """
        fps = float(fps)
        if fps <= 0:
            raise ValueError(f"resample: fps must be > 0, got {fps}")
        if abs(fps - self.fps) < 1e-9:
            return self
        n_new = max(1, int(round(self.n_frames * fps / self.fps)))
        t_old = self.times
        t_new = np.clip(np.arange(n_new, dtype=np.float64) / fps, 0.0, t_old[-1])
        if self.n_frames == 1:
            idx = np.zeros(n_new, dtype=np.int64)
            return Motion(self.name, fps, self.poses[idx], self.trans[idx], self.labels[idx])
        poses = np.empty((n_new, N_JOINTS, 3), dtype=np.float64)
        for j in range(N_JOINTS):
            slerp = Slerp(t_old, Rotation.from_rotvec(self.poses[:, j].astype(np.float64)))
            poses[:, j] = slerp(t_new).as_rotvec()
        trans = np.stack([np.interp(t_new, t_old, self.trans[:, k]) for k in range(3)], axis=-1)
        lab_idx = np.clip(np.searchsorted(t_old, t_new + 1e-9, side="right") - 1, 0, self.n_frames - 1)
        return Motion(self.name, fps, poses, trans, self.labels[lab_idx])

    def transformed(self, yaw_rad: float = 0.0, offset_xz: tuple[float, float] = (0.0, 0.0)) -> "Motion":
        """Rotate the whole motion by ``yaw_rad`` about the world y axis through the origin,
        then shift it by ``offset_xz`` on the ground (y unchanged)."""
        rot = Rotation.from_rotvec([0.0, yaw_rad, 0.0])
        root = (rot * Rotation.from_rotvec(self.poses[:, 0].astype(np.float64))).as_rotvec()
        poses = self.poses.copy()
        poses[:, 0] = root
        trans = rot.apply(self.trans.astype(np.float64))
        trans[:, 0] += offset_xz[0]
        trans[:, 2] += offset_xz[1]
        return Motion(self.name, self.fps, poses, trans, self.labels)


# ---------------------------------------------------------------------- rotation helpers
def euler_to_rotvec(euler_deg: np.ndarray) -> np.ndarray:
    """``(T, 24, 3)`` per-joint Euler degrees (x, y, z slots; order per
    :data:`hmrflow.priors.joint_limits.EULER_ORDERS`) -> ``(T, 24, 3)`` axis-angle (radians)."""
    return euler_deg_to_pose(euler_deg)


def rotvec_to_euler(rotvec: np.ndarray) -> np.ndarray:
    """``(T, 24, 3)`` axis-angle -> per-joint Euler degrees (inverse of :func:`euler_to_rotvec`)."""
    return pose_euler_deg(rotvec)


def heading_of(root_rotvec: np.ndarray) -> np.ndarray:
    """``(T, 3)`` root axis-angle -> ``(T,)`` heading (radians, about +y; 0 = facing +z).

    The heading is the direction of the body's forward axis projected on the ground.
    """
    fwd = Rotation.from_rotvec(np.asarray(root_rotvec, dtype=np.float64).reshape(-1, 3)).apply([0.0, 0.0, 1.0])
    return np.arctan2(fwd[:, 0], fwd[:, 2])


def smooth_heading(root_rotvec: np.ndarray, fps: float, window_s: float = 1.0) -> np.ndarray:
    """Heading ``(T,)`` averaged on the circle over ``window_s`` (removes pelvis yaw sway of gait)."""
    h = heading_of(root_rotvec)
    w = max(1, int(round(window_s * fps)))
    if w <= 1 or h.shape[0] < 2:
        return h
    c, s = np.cos(h), np.sin(h)
    kernel = np.ones(w) / w
    pad = w // 2
    cp = np.pad(c, (pad, w - 1 - pad), mode="edge")
    sp = np.pad(s, (pad, w - 1 - pad), mode="edge")
    return np.arctan2(np.convolve(sp, kernel, "valid"), np.convolve(cp, kernel, "valid"))


def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 ease 0 -> 1 on [0, 1] (``3x^2 - 2x^3``), clipped outside."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def smootherstep(x: np.ndarray) -> np.ndarray:
    """C2 ease 0 -> 1 on [0, 1] (``6x^5 - 15x^4 + 10x^3``), clipped outside."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def slerp_rotvecs(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-element slerp of axis-angle arrays ``a``, ``b`` of shape ``(..., 3)`` by weights ``w``
    broadcastable to ``(...)`` (0 -> a, 1 -> b), along the shortest arc."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    shape = a.shape
    ra = Rotation.from_rotvec(a.reshape(-1, 3))
    rb = Rotation.from_rotvec(b.reshape(-1, 3))
    delta = (ra.inv() * rb).as_rotvec()  # shortest arc (angle <= pi)
    ww = np.broadcast_to(np.asarray(w, dtype=np.float64), shape[:-1]).reshape(-1, 1)
    return (ra * Rotation.from_rotvec(delta * ww)).as_rotvec().reshape(shape)


def angular_speed(poses: np.ndarray, fps: float) -> np.ndarray:
    """``(T, 24, 3)`` axis-angle -> ``(T-1, 24)`` relative rotation angle per frame times fps (rad/s)."""
    p = np.asarray(poses, dtype=np.float64)
    r0 = Rotation.from_rotvec(p[:-1].reshape(-1, 3))
    r1 = Rotation.from_rotvec(p[1:].reshape(-1, 3))
    return (r0.inv() * r1).magnitude().reshape(p.shape[0] - 1, p.shape[1]) * fps
