"""A faithful model of per-frame mesh-estimate errors (for training and evaluating the prior).

Per-frame monocular estimators (HMR2.0-style) err in characteristic ways, all modelled here
on camera-frame SMPL motion ``rotmats (T, 24, 3, 3)``, ``transl (T, 3)``:

* **jitter**: independent per-frame rotation noise on every joint (a few degrees, larger on
  distal joints) and on the root orientation, plus a slowly varying per-joint bias;
* **left/right flips**: short bursts where the limbs' rotations are swapped and mirrored
  (``R_j <- M R_{flip(j)} M``, ``M = diag(-1, 1, 1)``, :data:`hmrflow.priors.skeleton.FLIP_PERM`);
* **depth drift**: the root moves along the camera ray by a smooth relative error (monocular
  scale ambiguity) plus per-frame depth noise, and jitters across the ray;
* **dropped frames**: single dropped frames and gaps up to ``max_gap_s`` (occlusion,
  missed detections), where the person is not observed at all;
* **confidence**: one smooth "difficulty" process drives the noise level, and the reported
  confidence falls with it (and before/after gaps), so confidence is informative.

All randomness comes from the ``numpy.random.Generator`` given, so a seed reproduces a set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from hmrflow.priors.skeleton import FLIP_PERM, N_JOINTS

# distal joints (knees, ankles, feet, elbows, wrists, hands) are noisier than the spine
_JOINT_SCALE = np.ones(N_JOINTS)
_JOINT_SCALE[[4, 5, 18, 19]] = 1.3
_JOINT_SCALE[[7, 8, 20, 21]] = 1.6
_JOINT_SCALE[[10, 11, 22, 23]] = 2.0
_MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass(frozen=True)
class NoiseConfig:
    """Magnitudes of the estimate errors.

    Defaults give, on the motion library, per-frame MPJPE ~90 mm, PA-MPJPE ~75 mm, acceleration
    error ~50 mm/frame^2 and camera-frame errors of ~0.4 m (mostly depth): the error is mostly a
    slowly varying bias (as for real single-frame estimators), with per-frame jitter on top.
    """

    joint_rot_deg: float = 1.0
    joint_bias_deg: float = 6.0
    root_rot_deg: float = 0.8
    pos_m: float = 0.015
    depth_rel: float = 0.02
    depth_drift_rel: float = 0.05
    drift_sigma_s: float = 0.6
    flip_rate_hz: float = 0.1
    flip_len_frames: tuple[int, int] = (1, 6)
    drop_prob: float = 0.03
    gap_rate_hz: float = 0.25
    max_gap_s: float = 1.0
    scale_range: tuple[float, float] = (0.6, 1.5)


@dataclass(frozen=True)
class NoisyEstimates:
    """Output of :func:`apply_noise` (T frames).

    rotmats (T, 24, 3, 3) float32, transl (T, 3) float32, observed (T,) bool,
    confidence (T,) float32 in [0, 1], flipped (T,) bool (frames with an L/R flip).
    """

    rotmats: np.ndarray
    transl: np.ndarray
    observed: np.ndarray
    confidence: np.ndarray
    flipped: np.ndarray


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float, dims: tuple[int, ...] = ()) -> np.ndarray:
    """Unit-std smooth Gaussian noise (n, *dims), smoothed along axis 0 with ``sigma`` frames."""
    x = rng.normal(size=(n,) + dims)
    if sigma > 0.5 and n > 1:
        x = gaussian_filter1d(x, sigma, axis=0, mode="reflect")
        x = x / max(float(x.std()), 1e-6)
    return x


def _rand_rot(rng: np.random.Generator, shape: tuple[int, ...], std_rad: np.ndarray | float) -> np.ndarray:
    """Random rotation matrices (..., 3, 3) with axis-angle components of std ``std_rad``."""
    rv = rng.normal(size=shape + (3,)) * np.asarray(std_rad)[..., None]
    return Rotation.from_rotvec(rv.reshape(-1, 3)).as_matrix().reshape(shape + (3, 3))


def sample_gaps(rng: np.random.Generator, n: int, fps: float, cfg: NoiseConfig) -> np.ndarray:
    """(n,) bool observed mask with dropped frames and gaps of 1 frame .. ``max_gap_s``.

    Gaps never merge into a longer one (a gap is only placed with an observed frame on each
    side); a gap may start before frame 0 (the track is entered occluded).  Keeps at least two
    observed frames.
    """
    obs = np.ones(n, bool)
    n_gaps = rng.poisson(cfg.gap_rate_hz * n / fps)
    max_len = max(1, int(round(cfg.max_gap_s * fps)))
    for _ in range(n_gaps):
        length = int(rng.integers(2, max_len + 1))
        start = int(rng.integers(-length // 2, n))
        a, b = max(0, start), min(n, max(0, start + length))
        if a >= b or not obs[max(0, a - 1) : min(n, b + 1)].all():
            continue
        obs[a:b] = False
    drop = rng.random(n) < cfg.drop_prob
    for i in np.flatnonzero(drop):
        if obs[max(0, i - 1) : i + 2].all():
            obs[i] = False
    if obs.sum() < 2:
        obs[[0, n - 1]] = True
    return obs


def apply_noise(
    rotmats: np.ndarray,
    transl: np.ndarray,
    rng: np.random.Generator,
    fps: float = 30.0,
    cfg: NoiseConfig = NoiseConfig(),
) -> NoisyEstimates:
    """Per-frame estimates of a clean camera-frame motion.

    rotmats: (T, 24, 3, 3) clean rotations (joint 0 = root in the camera frame);
    transl: (T, 3) clean SMPL translation, camera frame (camera at the origin).
    """
    rot = np.asarray(rotmats, np.float64)
    tr = np.asarray(transl, np.float64)
    n = rot.shape[0]
    scale = rng.uniform(*cfg.scale_range)
    difficulty = np.clip(0.5 + 0.35 * _smooth_noise(rng, n, 0.5 * fps), 0.0, 1.0)  # (T,)
    observed = sample_gaps(rng, n, fps, cfg)
    # frames next to a gap are harder (partial occlusion)
    near_gap = gaussian_filter1d((~observed).astype(np.float64), 0.15 * fps, mode="nearest")
    difficulty = np.clip(difficulty + 2.0 * near_gap, 0.0, 1.0)
    level = scale * (0.4 + 1.2 * difficulty)  # (T,) noise multiplier

    # joint rotations: bias (slow) + jitter (per frame)
    deg = np.pi / 180.0
    bias_sig = cfg.joint_bias_deg * deg * scale * _JOINT_SCALE
    bias_rv = _smooth_noise(rng, n, cfg.drift_sigma_s * fps, (N_JOINTS, 3)) * bias_sig[:, None]
    bias_rv[:, 0] = 0.0
    jit_std = cfg.joint_rot_deg * deg * level[:, None] * _JOINT_SCALE[None]  # (T, 24)
    jit_std[:, 0] = cfg.root_rot_deg * deg * level
    jit_rv = rng.normal(size=(n, N_JOINTS, 3)) * jit_std[..., None] + bias_rv
    noise = Rotation.from_rotvec(jit_rv.reshape(-1, 3)).as_matrix().reshape(n, N_JOINTS, 3, 3)
    out = rot.copy()
    # left/right flip bursts (local joint rotations mirrored and swapped; root kept)
    flipped = np.zeros(n, bool)
    for _ in range(rng.poisson(cfg.flip_rate_hz * scale * n / fps)):
        length = int(rng.integers(cfg.flip_len_frames[0], cfg.flip_len_frames[1] + 1))
        s = int(rng.integers(0, n))
        flipped[s : s + length] = True
    if flipped.any():
        mirrored = _MIRROR @ rot[flipped][:, FLIP_PERM] @ _MIRROR
        mirrored[:, 0] = rot[flipped][:, 0]
        out[flipped] = mirrored
    out[:, 1:] = out[:, 1:] @ noise[:, 1:]  # local joints: perturb in the parent frame
    out[:, 0] = noise[:, 0] @ out[:, 0]  # root: perturb in the camera frame

    # root position: depth drift along the ray + per-frame noise
    p = tr + np.array([0.0, -0.22, 0.03])  # approximate root joint (see representation.ROOT_JOINT)
    drift = cfg.depth_drift_rel * scale * _smooth_noise(rng, n, cfg.drift_sigma_s * fps)
    depth_jit = cfg.depth_rel * level * rng.normal(size=n)
    p_noisy = p * (1.0 + drift + depth_jit)[:, None]
    p_noisy = p_noisy + rng.normal(size=(n, 3)) * (cfg.pos_m * level)[:, None]
    tr_noisy = p_noisy - np.array([0.0, -0.22, 0.03])

    confidence = np.clip(1.0 - 0.7 * difficulty + rng.normal(0, 0.05, n), 0.02, 1.0)
    return NoisyEstimates(
        rotmats=out.astype(np.float32),
        transl=tr_noisy.astype(np.float32),
        observed=observed,
        confidence=confidence.astype(np.float32),
        flipped=flipped & observed,
    )


def random_camera(rng: np.random.Generator, centre_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random camera looking roughly at ``centre_world`` (3,) (world y up).

    Returns (R (3, 3), t (3,)) world -> OpenCV camera (``x_cam = R x_world + t``): random yaw,
    pitch +-25 deg, roll +-5 deg; the centre lands 2.5-10 m in front, up to 1.5 m off-axis.
    """
    yaw = rng.uniform(0, 2 * np.pi)
    pitch = rng.uniform(-25, 25)
    roll = rng.uniform(-5, 5)
    to_cv = np.diag([-1.0, -1.0, 1.0])  # world y up, +z forward -> camera y down (a 180 deg roll)
    r = (
        Rotation.from_euler("x", pitch, degrees=True).as_matrix()
        @ Rotation.from_euler("z", roll, degrees=True).as_matrix()
        @ to_cv
        @ Rotation.from_euler("y", yaw).as_matrix()
    )
    depth = rng.uniform(2.5, 10.0)
    target = np.array([rng.uniform(-0.15, 0.15) * depth, rng.uniform(-0.1, 0.1) * depth, depth])
    t = target - r @ np.asarray(centre_world, np.float64)
    return r, t


def world_to_camera(
    rotmats: np.ndarray, transl: np.ndarray, r: np.ndarray, t: np.ndarray, root_joint: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Change frame ``x' = R x + t``: ``root' = R root``, ``transl' = R (J0 + transl) + t - J0``.

    rotmats (T, 24, 3, 3), transl (T, 3); ``root_joint`` J0 (3,) (default: the template value).
    """
    j0 = np.array([0.0, -0.22, 0.03]) if root_joint is None else np.asarray(root_joint, np.float64)
    out = np.array(rotmats, np.float64, copy=True)
    out[:, 0] = r @ out[:, 0]
    tr = (np.asarray(transl, np.float64) + j0) @ r.T + t - j0
    return out.astype(np.float32), tr.astype(np.float32)
