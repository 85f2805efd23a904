"""Pinhole cameras for the synthetic world: intrinsics, look-at extrinsics, trajectories.

World frame: y up, ground y = 0.  Camera frame: OpenCV (x right, y down, z forward).
Extrinsics map world to camera: ``x_cam = R @ x_world + t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WORLD_UP = np.array([0.0, 1.0, 0.0])


def intrinsics(width: int, height: int, vfov_deg: float) -> np.ndarray:
    """(3, 3) float64 K with square pixels, principal point at the image centre.

    The centre of an ``W x H`` image is ``((W - 1) / 2, (H - 1) / 2)`` in the OpenCV pixel
    convention (pixel centres on integers).
    """
    f = 0.5 * height / math.tan(math.radians(vfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(position: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera ``(R (3,3), t (3,))`` of a camera at ``position`` looking at ``target``, no roll."""
    fwd = np.asarray(target, float) - np.asarray(position, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, WORLD_UP)
    if np.linalg.norm(right) < 1e-6:  # looking straight up/down
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    return R, -R @ np.asarray(position, float)


def camera_centre(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera position in the world, ``-R^T t``; works on (..., 3, 3), (..., 3)."""
    return -np.einsum("...ji,...j->...i", R, t)


@dataclass(frozen=True)
class CameraPath:
    """A camera trajectory: position and look-at target interpolated linearly in time, plus a
    sinusoidal yaw sweep (panning) about the vertical axis.

    Attributes:
        start, end: (3,) camera positions at the first and last frame (dolly when they differ).
        target: (3,) the point looked at when ``pan_deg`` is 0.
        pan_deg: amplitude of the yaw sweep in degrees (0 = no panning).
        pan_period_s: period of the sweep in seconds.
    """

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    target: tuple[float, float, float]
    pan_deg: float = 0.0
    pan_period_s: float = 8.0

    def extrinsics(self, times: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        """(F,) times in seconds -> world->camera ``R (F,3,3)``, ``t (F,3)`` float64."""
        a = np.clip(times / max(duration, 1e-9), 0.0, 1.0)
        start, end, target = (np.asarray(x, float) for x in (self.start, self.end, self.target))
        Rs, ts = [], []
        for ai, ti in zip(a, times):
            pos = start + ai * (end - start)
            yaw = math.radians(self.pan_deg) * math.sin(2 * math.pi * ti / self.pan_period_s)
            d = target - start  # keep the viewing direction of the start, rotated by yaw
            c, s = math.cos(yaw), math.sin(yaw)
            d = np.array([c * d[0] + s * d[2], d[1], -s * d[0] + c * d[2]])
            R, t = look_at(pos, pos + d)
            Rs.append(R)
            ts.append(t)
        return np.stack(Rs), np.stack(ts)
