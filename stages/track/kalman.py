"""Constant-velocity Kalman filters whose time step is taken from timestamps.

Two models are used by the tracker, both "position + velocity" driven by continuous
white-noise acceleration, sampled at whatever ``dt`` separates two frames:

* the camera-space root position ``cam_t`` (3-D, metres), measured with a noise that
  is elongated along the viewing ray (monocular depth is the weak direction);
* the image box as centre and size ``(cx, cy, w, h)`` (pixels), with noises that
  scale with the box height.

Everything is a pure function on a :class:`KalmanState` (mean ``x`` of shape (2k,),
covariance ``P`` of shape (2k, 2k)): ``dt`` may be any non-negative number, so a
variable frame rate, subsampling and long gaps are handled by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KalmanState:
    """Gaussian belief over ``[position (k,), velocity (k,)]``.

    x: (2k,) float64 mean.  P: (2k, 2k) float64 covariance.
    """

    x: np.ndarray
    P: np.ndarray

    @property
    def dim(self) -> int:
        """Number of position coordinates ``k``."""
        return self.x.shape[0] // 2


def cv_transition(dt: float, k: int) -> np.ndarray:
    """(2k, 2k) transition matrix ``[[I, dt I], [0, I]]`` of the constant-velocity model."""
    F = np.eye(2 * k)
    F[:k, k:] = dt * np.eye(k)
    return F


def cv_process_noise(dt: float, accel_std: np.ndarray | float, k: int) -> np.ndarray:
    """(2k, 2k) process noise of continuous white-noise acceleration over ``dt`` seconds.

    ``accel_std`` (scalar or (k,)) is the square root of the acceleration's spectral
    density, in position units / s^1.5: after ``dt`` seconds without measurements the
    velocity variance grew by ``accel_std**2 * dt`` and the position variance by
    ``accel_std**2 * dt**3 / 3``.  Unlike the per-frame ("discrete white noise")
    variant, this model composes exactly: two steps of ``dt/2`` equal one step of ``dt``,
    which is what makes the filter independent of the frame rate.
    """
    q = np.broadcast_to(np.asarray(accel_std, dtype=np.float64) ** 2, (k,))
    Q = np.zeros((2 * k, 2 * k))
    idx = np.arange(k)
    Q[idx, idx] = q * dt**3 / 3.0
    Q[idx, idx + k] = q * dt**2 / 2.0
    Q[idx + k, idx] = q * dt**2 / 2.0
    Q[idx + k, idx + k] = q * dt
    return Q


def kf_init(z: np.ndarray, R: np.ndarray, vel_std: np.ndarray | float) -> KalmanState:
    """Belief after a first measurement ``z`` (k,) with noise ``R`` (k, k); velocity unknown."""
    k = z.shape[0]
    P = np.zeros((2 * k, 2 * k))
    P[:k, :k] = R
    P[k:, k:] = np.diag(np.broadcast_to(np.asarray(vel_std, dtype=np.float64) ** 2, (k,)))
    return KalmanState(x=np.concatenate([z.astype(np.float64), np.zeros(k)]), P=P)


def kf_predict(state: KalmanState, dt: float, accel_std: np.ndarray | float) -> KalmanState:
    """Propagate the belief by ``dt`` seconds (``dt < 0`` is treated as 0)."""
    dt = max(float(dt), 0.0)
    k = state.dim
    F = cv_transition(dt, k)
    return KalmanState(x=F @ state.x, P=F @ state.P @ F.T + cv_process_noise(dt, accel_std, k))


def kf_project(state: KalmanState, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted measurement mean (k,) and innovation covariance ``S`` (k, k) for noise ``R``."""
    k = state.dim
    return state.x[:k].copy(), state.P[:k, :k] + R


def kf_update(state: KalmanState, z: np.ndarray, R: np.ndarray) -> KalmanState:
    """Condition the belief on a position measurement ``z`` (k,) with noise ``R`` (k, k).

    Uses the Joseph form so that ``P`` stays symmetric positive definite.
    """
    k = state.dim
    H = np.zeros((k, 2 * k))
    H[:, :k] = np.eye(k)
    S = state.P[:k, :k] + R
    K = np.linalg.solve(S, (state.P @ H.T).T).T  # (2k, k) = P H^T S^-1
    x = state.x + K @ (z - state.x[:k])
    I_KH = np.eye(2 * k) - K @ H
    P = I_KH @ state.P @ I_KH.T + K @ R @ K.T
    return KalmanState(x=x, P=0.5 * (P + P.T))


# ------------------------------------------------------------- measurement noises
def root_measurement_noise(cam_t: np.ndarray, perp_std: float, depth_rel_std: float) -> np.ndarray:
    """(3, 3) noise of a monocular root position ``cam_t`` (3,) metres, camera frame.

    The error is ``perp_std`` across the viewing ray and ``depth_rel_std * |cam_t|``
    along it (depth from a single image scales the whole position along the ray).
    """
    t = np.asarray(cam_t, dtype=np.float64)
    dist = float(np.linalg.norm(t))
    ray = t / dist if dist > 1e-6 else np.array([0.0, 0.0, 1.0])
    along = max(depth_rel_std * dist, perp_std)
    return perp_std**2 * np.eye(3) + (along**2 - perp_std**2) * np.outer(ray, ray)


def box_to_cxcywh(box_xyxy: np.ndarray) -> np.ndarray:
    """(..., 4) ``xyxy`` -> (..., 4) centre x, centre y, width, height."""
    b = np.asarray(box_xyxy, dtype=np.float64)
    return np.stack(
        [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]],
        axis=-1,
    )


def cxcywh_to_box(c: np.ndarray) -> np.ndarray:
    """(..., 4) centre/size -> (..., 4) ``xyxy`` (sizes clipped at 1 px)."""
    c = np.asarray(c, dtype=np.float64)
    w = np.maximum(c[..., 2], 1.0)
    h = np.maximum(c[..., 3], 1.0)
    return np.stack([c[..., 0] - w / 2, c[..., 1] - h / 2, c[..., 0] + w / 2, c[..., 1] + h / 2], axis=-1)


def box_measurement_noise(height_px: float, rel_std: float) -> np.ndarray:
    """(4, 4) diagonal noise of a box measurement: ``rel_std`` times the box height."""
    s = max(float(height_px), 1.0) * rel_std
    return np.eye(4) * s**2


# ------------------------------------------------------------- many tracks at once
def kf_predict_batch(
    x: np.ndarray, P: np.ndarray, dt: np.ndarray, accel_std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kf_predict` of T beliefs at once: x (T, 2k), P (T, 2k, 2k), dt (T,), accel_std (T,)
    (per track, scalar per coordinate); returns the new (x, P)."""
    t, n = x.shape
    k = n // 2
    dt = np.maximum(np.asarray(dt, np.float64), 0.0)
    F = np.broadcast_to(np.eye(n), (t, n, n)).copy()
    idx = np.arange(k)
    F[:, idx, idx + k] = dt[:, None]
    q = np.asarray(accel_std, np.float64) ** 2
    Q = np.zeros((t, n, n))
    Q[:, idx, idx] = (q * dt**3 / 3.0)[:, None]
    Q[:, idx, idx + k] = Q[:, idx + k, idx] = (q * dt**2 / 2.0)[:, None]
    Q[:, idx + k, idx + k] = (q * dt)[:, None]
    return np.einsum("tij,tj->ti", F, x), F @ P @ np.swapaxes(F, 1, 2) + Q


def kf_update_batch(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kf_update` of T beliefs at once: x (T, 2k), P (T, 2k, 2k), z (T, k), R (T, k, k)."""
    t, n = x.shape
    k = n // 2
    S = P[:, :k, :k] + R
    PHt = P[:, :, :k]  # P H^T with H = [I 0]
    K = np.swapaxes(np.linalg.solve(S, np.swapaxes(PHt, 1, 2)), 1, 2)  # (T, 2k, k)
    x_new = x + np.einsum("tij,tj->ti", K, z - x[:, :k])
    I_KH = np.broadcast_to(np.eye(n), (t, n, n)).copy()
    I_KH[:, :, :k] -= K
    P_new = I_KH @ P @ np.swapaxes(I_KH, 1, 2) + K @ R @ np.swapaxes(K, 1, 2)
    return x_new, 0.5 * (P_new + np.swapaxes(P_new, 1, 2))


def root_measurement_noise_batch(cam_t: np.ndarray, perp_std: float, depth_rel_std: float) -> np.ndarray:
    """:func:`root_measurement_noise` of T positions (T, 3) at once: (T, 3, 3)."""
    t = np.asarray(cam_t, np.float64).reshape(-1, 3)
    dist = np.linalg.norm(t, axis=1)
    ray = np.where(dist[:, None] > 1e-6, t / np.maximum(dist, 1e-6)[:, None], np.array([0.0, 0.0, 1.0]))
    along = np.maximum(depth_rel_std * dist, perp_std)
    return perp_std**2 * np.eye(3) + (along**2 - perp_std**2)[:, None, None] * np.einsum("ti,tj->tij", ray, ray)


def box_measurement_noise_batch(height_px: np.ndarray, rel_std: float) -> np.ndarray:
    """:func:`box_measurement_noise` of T boxes at once: heights (T,) -> (T, 4, 4)."""
    s = np.maximum(np.asarray(height_px, np.float64), 1.0) * rel_std
    return np.eye(4) * (s**2)[:, None, None]
