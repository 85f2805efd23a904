"""Gravity and the ground plane from the people's feet, with a prior up direction.

Cues, all in one camera frame (OpenCV axes, metres):

* **prior up**: the camera network's up direction (:mod:`hmrflow.stages.camera.fov`) when
  there is one, else the **body up**: the mean direction from the pelvis to the neck over all
  rows (people mostly stand upright; but the estimator barely sees the camera's pitch, so
  the body up leans with the camera);
* **foot contacts**: in every row the lowest of the ankle and foot joints along the prior up
  is on the ground (while walking one foot always is).  A plane fitted to those points
  (robustly: iteratively reweighted, outliers beyond ``OUTLIER_MAD`` MADs dropped) gives
  the ground's normal and height.

With the camera network's up direction, that is gravity and only the plane's height is
fitted: depth errors that differ between people and along a walk tilt a plane through the
feet more than the network errs (docs/bench/world.md).  Without it, the plane's normal is
used when the contact points spread over at least ``min_spread_m`` in two directions
(several people, or people who walk) and agrees with the body up within
``MAX_DISAGREE_DEG``; otherwise gravity is the body up.  The height is lowered by the body model's sole offset (the
joints sit above the sole), so the ground is where the soles are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: SMPL joints: pelvis, neck and the joints a foot stands on (ankles, feet).
PELVIS, NECK = 0, 12
FOOT_JOINTS = (7, 8, 10, 11)
#: Points farther than this many median absolute deviations from the plane are dropped.
OUTLIER_MAD = 3.0
#: Plane normals farther than this from the body up are not trusted.
MAX_DISAGREE_DEG = 20.0


@dataclass(frozen=True)
class GroundFit:
    """Gravity and ground in one camera frame.

    up: (3,) unit vector pointing up (against gravity).  height: the camera's height above the
    ground (metres; points x on the ground satisfy ``up . x = -height``).  source: ``plane``
    (normal of the foot-contact plane), ``network`` (the camera network's up direction) or
    ``body`` (mean body up).  n_points: contact points used; spread_m: their spread along the
    plane's second principal axis; body_up: the mean body up (reported for checks).
    """

    up: np.ndarray
    height: float
    source: str
    n_points: int
    spread_m: float
    body_plane_angle_deg: float
    body_up: np.ndarray


def body_up(joints: np.ndarray) -> np.ndarray:
    """(N, 24, 3) joints -> (3,) unit mean pelvis-to-neck direction."""
    d = joints[:, NECK] - joints[:, PELVIS]
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    m = d.mean(axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-9)


def lowest_feet(joints: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(N, 24, 3) joints -> (N, 3) the lowest ankle/foot joint of each row along ``up``."""
    feet = joints[:, list(FOOT_JOINTS)]
    k = np.argmin(feet @ up, axis=1)
    return feet[np.arange(len(feet)), k]


def _plane(points: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted plane fit: (centre (3,), normal (3,), spreads (3,) largest first).

    Through the 3x3 scatter matrix summed with einsum (no BLAS), so every process gets the
    same bits whatever its thread count.
    """
    c = np.einsum("n,nc->c", w, points) / w.sum()
    d = points - c
    vals, vecs = np.linalg.eigh(np.einsum("n,ni,nj->ij", w, d, d) / w.sum())
    return c, vecs[:, 0], np.sqrt(np.maximum(vals[::-1], 0.0))


def fit_ground(
    joints: np.ndarray, sole_offset: float = 0.0, min_spread_m: float = 0.5, prior_up: np.ndarray | None = None
) -> GroundFit:
    """Gravity and ground height from people's joints (N, 24, 3) in one camera frame (see module docstring).

    sole_offset: how far the foot joints sit above the sole in the rest pose (metres).
    prior_up: an up direction known otherwise (the camera network's); it is gravity then, and
    replaces the mean body up as the direction contacts are found along (the estimator
    barely sees the camera's pitch, so bodies look upright to the camera).  Raises
    ValueError for no rows.
    """
    if len(joints) == 0:
        raise ValueError("fit_ground needs at least one row of joints")
    body = body_up(joints)
    up_b = body if prior_up is None else np.asarray(prior_up, np.float64) / np.linalg.norm(prior_up)
    pts = lowest_feet(joints, up_b)
    w = np.ones(len(pts))
    normal, spread, centre = up_b, 0.0, np.median(pts, axis=0)
    if len(pts) >= 6:
        for _ in range(4):
            centre, n, s = _plane(pts, w)
            n = n if n @ up_b > 0 else -n
            r = (pts - centre) @ n
            mad = np.median(np.abs(r - np.median(r))) + 1e-6
            w = (np.abs(r - np.median(r)) < OUTLIER_MAD * 1.4826 * mad).astype(float)
            if w.sum() < 6:
                w = np.ones(len(pts))
                break
            normal, spread = n, float(s[1])
    angle = float(np.degrees(np.arccos(np.clip(normal @ up_b, -1.0, 1.0))))
    use_plane = prior_up is None and spread >= min_spread_m and angle <= MAX_DISAGREE_DEG
    up = normal if use_plane else up_b
    foot_h = np.median(pts[w > 0] @ up) if w.sum() else np.median(pts @ up)
    height = -(float(foot_h) - sole_offset)
    source = "plane" if use_plane else ("body" if prior_up is None else "network")
    return GroundFit(up, height, source, int(w.sum()), spread, angle, body)


def world_from_camera(up: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """The world frame of a camera frame: y up, origin on the ground below the camera, z the
    camera's viewing direction laid flat, x = y cross z.

    Returns ``(R (3, 3), o (3,))`` with ``x_world = R @ (x_cam - o)``; ``o`` is the origin in
    camera coordinates.
    """
    y = up / np.linalg.norm(up)
    fwd = np.array([0.0, 0.0, 1.0])
    z = fwd - (fwd @ y) * y
    if np.linalg.norm(z) < 1e-6:  # camera looks straight down/up: take its y axis instead
        z = np.array([0.0, 1.0, 0.0]) - y[1] * y
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    return np.stack([x, y, z]), -height * y
