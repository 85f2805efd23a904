"""Pairwise track-to-detection affinities and the gated assignment.

Every function is vectorised over T tracks and D detections and returns a (T, D)
array; the tracker adds them up with weights (see :mod:`hmrflow.stages.track.tracker`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def mahalanobis_sq(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of measurements to predicted ones.

    mean: (T, k) predicted measurements; cov: (T, k, k) innovation covariances;
    z: (D, k) measurements.  Returns (T, D).
    """
    diff = z[None, :, :] - mean[:, None, :]  # (T, D, k)
    L = np.linalg.cholesky(cov)  # (T, k, k)
    # solve L y = diff^T for every track: (T, k, D)
    y = np.linalg.solve(L, np.swapaxes(diff, 1, 2))
    return np.sum(y * y, axis=1)


def pose_distance(track_rotmats: np.ndarray, det_rotmats: np.ndarray) -> np.ndarray:
    """Mean geodesic angle (radians) over joints between poses.

    track_rotmats: (T, J, 3, 3); det_rotmats: (D, J, 3, 3).  Returns (T, D) in [0, pi].
    The angle of ``A^T B`` is ``arccos((trace(A^T B) - 1) / 2)``; the trace is the
    elementwise product sum of ``A`` and ``B``.
    """
    a = np.asarray(track_rotmats, dtype=np.float64)
    b = np.asarray(det_rotmats, dtype=np.float64)
    tr = np.einsum("tjab,djab->tdj", a, b)  # (T, D, J)
    cos = np.clip((tr - 1.0) / 2.0, -1.0, 1.0)
    return np.arccos(cos).mean(axis=-1)


def shape_distance_sq(track_betas: np.ndarray, det_betas: np.ndarray, std: np.ndarray | float) -> np.ndarray:
    """Mean squared z-score per coefficient between shapes: (T, D).

    track_betas: (T, B) running means; det_betas: (D, B); std: scalar, (T,) or (T, B)
    expected standard deviation of a coefficient's difference.
    """
    diff = det_betas[None, :, :].astype(np.float64) - track_betas[:, None, :].astype(np.float64)
    s = np.asarray(std, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None, None]
    elif s.ndim == 2:
        s = s[:, None, :]
    return np.mean((diff / s) ** 2, axis=-1)


def gated_assignment(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost matching where every pair must cost less than ``max_cost``.

    cost: (T, D) with ``inf`` (or anything >= ``max_cost``) for pairs that must never
    be matched.  Each track and each detection may also stay unmatched at cost
    ``max_cost`` (the classical augmented-matrix formulation), so a bad match is never
    forced to make room for another.  Returns sorted ``(track, detection)`` pairs.
    """
    T, D = cost.shape
    if T == 0 or D == 0:
        return []
    big = max_cost * (T + D + 1) * 4.0 + 1.0  # larger than any feasible total
    c = np.where(np.isfinite(cost) & (cost < max_cost), cost, big)
    full = np.full((T + D, D + T), big)
    full[:T, :D] = c
    full[np.arange(T), D + np.arange(T)] = max_cost  # track unmatched
    full[T + np.arange(D), np.arange(D)] = max_cost  # detection unmatched
    full[T:, D:] = 0.0  # dummy-dummy
    rows, cols = linear_sum_assignment(full)
    pairs = [(int(r), int(q)) for r, q in zip(rows, cols) if r < T and q < D and c[r, q] < big]
    return sorted(pairs)


#: Fastest a person moves between two sightings (m/s); faster apparent moves are other people.
MAX_SPEED = 3.0
#: Monocular roots are this uncertain along the viewing ray, as a fraction of the distance, plus
#: a floor (m): the reach allows for it.
REACH_DEPTH_REL = 0.25
REACH_FLOOR_M = 0.5


def reachable(last: np.ndarray, new: np.ndarray, dt: np.ndarray | float) -> np.ndarray:
    """Whether a person last seen at ``last`` (T, 3) could be at ``new`` (D, 3) after ``dt`` (T,)
    seconds: the distance is at most ``MAX_SPEED * dt`` plus the monocular depth uncertainty of
    the farther of the two positions.  Returns (T, D) bool."""
    last = np.asarray(last, np.float64).reshape(-1, 3)
    new = np.asarray(new, np.float64).reshape(-1, 3)
    dist = np.linalg.norm(new[None, :, :] - last[:, None, :], axis=-1)
    depth = np.maximum(np.linalg.norm(last, axis=1)[:, None], np.linalg.norm(new, axis=1)[None, :])
    reach = MAX_SPEED * np.broadcast_to(np.asarray(dt, np.float64), (len(last),))[:, None]
    return dist <= reach + REACH_DEPTH_REL * depth + REACH_FLOOR_M
