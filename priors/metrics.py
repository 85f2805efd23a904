"""Pose, motion and detection metrics: the one home of MPJPE, PA-MPJPE and friends.

Evaluation (``hmrflow eval``), the benchmarks, the estimator's training losses and
validation, and the ECLM error budget all call these functions, so a published figure and
a training or acceleration criterion are computed by the same code.

Pose metrics (:func:`mpjpe`, :func:`pa_mpjpe`, :func:`procrustes_align`, :func:`pve`,
:func:`align_pelvis`) take NumPy arrays or torch tensors and answer in kind: NumPy in,
NumPy float64 out; torch in, torch float64 out on the input's device, differentiable (the
Procrustes fit goes through ``torch.linalg.svd``).  Both paths run the same torch code.

Units: every input position is in **metres**; every error returned is in **millimetres**
(``mm``), accelerations in ``mm/frame^2``, jitter in ``m/s^3`` (or ``m/frame^3`` with
``fps=1``).  Functions return one value per sample (per frame, or per frame and person) so
callers can average, weight and split them as they need (e.g. observed vs refinement-filled
frames); the mean of the result is the usual figure.

Alignment protocols
-------------------
* ``mpjpe(..., align="pelvis")``: subtract the pelvis joint (SMPL joint 0) of each
  skeleton first, the standard "root-aligned" MPJPE of HMR papers.
* ``mpjpe(..., align="none")``: camera-space error (translation errors included).
* ``pa_mpjpe``: per-frame similarity Procrustes (rotation, translation, scale; the
  reflection case is excluded, so the fitted transform is always a proper rotation).
* ``pve``: per-vertex error after subtracting each mesh's pelvis *joint*.
* ``accel_error``: on pelvis-aligned joints (as VIBE/TRAM/WHAM compute it), second
  finite difference over runs of consecutive frames only.
* ``jitter``: GT-free smoothness, mean norm of the **third** finite difference (jerk)
  times ``fps**3``, on the joints exactly as given (camera frame, no alignment), in
  ``m/s^3``; papers (GLAMR, WHAM, TRAM) print it in units of ``10 m/s^3`` — divide by 10.
"""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
import torch

#: index of the pelvis (root) joint in the SMPL joint order
PELVIS = 0
M_TO_MM = 1000.0

Align = Literal["pelvis", "none"]
#: a NumPy array or a torch tensor (pose metrics answer in kind)
Array = Union[np.ndarray, torch.Tensor]


def _check_pair(pred: Array, gt: Array) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Two (N, J, 3) arrays as float64 tensors, and whether the caller gave NumPy."""
    is_np = not isinstance(pred, torch.Tensor)
    p = pred.double() if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred, np.float64))
    g = gt.double() if isinstance(gt, torch.Tensor) else torch.as_tensor(np.asarray(gt, np.float64))
    if is_np:
        g = g.detach().cpu()
    else:
        g = g.to(p.device)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"expected two (N, J, 3) arrays of equal shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    return p, g, is_np


def _out(x: torch.Tensor, is_np: bool) -> Array:
    return x.detach().cpu().numpy() if is_np else x


def _align_pelvis_t(joints: torch.Tensor, pelvis: torch.Tensor | None = None) -> torch.Tensor:
    root = joints[:, PELVIS] if pelvis is None else pelvis
    return joints - root[:, None, :]


def align_pelvis(joints: Array, pelvis: Array | None = None) -> Array:
    """Subtract the pelvis: joints (N, J, 3) minus pelvis (N, 3) (default: joints[:, 0]).

    NumPy answers in float64; a tensor keeps its dtype and stays differentiable (losses use it).
    """
    if isinstance(joints, torch.Tensor):
        return _align_pelvis_t(joints, None if pelvis is None else torch.as_tensor(pelvis).to(joints))
    j = np.asarray(joints, dtype=np.float64)
    root = j[:, PELVIS] if pelvis is None else np.asarray(pelvis, dtype=np.float64)
    return j - root[:, None, :]


def mpjpe(pred: Array, gt: Array, align: Align = "pelvis") -> Array:
    """Mean per-joint position error per frame.

    pred, gt: (N, J, 3) metres, SMPL joint order (joint 0 = pelvis).
    align: "pelvis" subtracts each skeleton's pelvis joint first; "none" compares
        camera-space positions.
    Returns (N,) mm: the mean over joints of the Euclidean distance.
    """
    p, g, is_np = _check_pair(pred, gt)
    if align == "pelvis":
        p, g = _align_pelvis_t(p), _align_pelvis_t(g)
    elif align != "none":
        raise ValueError(f"align must be 'pelvis' or 'none', got {align!r}")
    return _out((p - g).norm(dim=-1).mean(dim=-1) * M_TO_MM, is_np)


def similarity_transform(pred: Array, gt: Array, scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Best similarity (or rigid, ``scale=False``) transform of point set ``pred`` onto ``gt`` (Umeyama).

    pred, gt: (K, 3) corresponding points.  Returns ``(s, R (3, 3), t (3,))`` float64 with
    ``s R pred + t`` closest to gt; R is a proper rotation.
    """
    p = np.asarray(pred, np.float64).reshape(-1, 3)
    g = np.asarray(gt, np.float64).reshape(-1, 3)
    mu_p, mu_g = p.mean(0), g.mean(0)
    x, y = p - mu_p, g - mu_g
    u, sv, vt = np.linalg.svd(x.T @ y)
    d = 1.0 if np.linalg.det(vt.T @ u.T) >= 0 else -1.0
    e = np.array([1.0, 1.0, d])
    rot = vt.T @ np.diag(e) @ u.T
    var = float((x**2).sum())
    s = float((sv * e).sum() / var) if (scale and var > 1e-20) else 1.0
    return s, rot, mu_g - s * rot @ mu_p


def _procrustes_t(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    mu_p = p.mean(dim=1, keepdim=True)
    mu_g = g.mean(dim=1, keepdim=True)
    x, y = p - mu_p, g - mu_g
    var_x = x.pow(2).sum(dim=(1, 2))  # (N,)
    u, s, vt = torch.linalg.svd(x.transpose(1, 2) @ y)  # x^T y = U S V^T
    v, ut = vt.transpose(1, 2), u.transpose(1, 2)
    d = torch.sign(torch.linalg.det(v @ ut))  # -1 where the optimum would be a reflection
    d = torch.where(d == 0, torch.ones_like(d), d)
    e = torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1)
    rot = v @ torch.diag_embed(e) @ ut  # (N, 3, 3), maps pred -> gt
    trace = (s * e).sum(dim=-1)
    scale = torch.where(var_x > 1e-20, trace / var_x.clamp_min(1e-20), torch.zeros_like(var_x))
    return scale[:, None, None] * (x @ rot.transpose(1, 2)) + mu_g


def procrustes_align(pred: Array, gt: Array) -> Array:
    """Best similarity transform of each ``pred[i]`` onto ``gt[i]`` (Umeyama 1991).

    pred, gt: (N, J, 3).  Returns (N, J, 3) = s_i R_i pred_i + t_i minimising the
    squared distance to gt_i, with R_i a proper rotation (det = +1: a reflection is
    never used, even when it would fit better) and s_i >= 0.
    """
    p, g, is_np = _check_pair(pred, gt)
    return _out(_procrustes_t(p, g), is_np)


def pa_mpjpe(pred: Array, gt: Array) -> Array:
    """MPJPE after per-frame similarity Procrustes alignment of pred onto gt.

    pred, gt: (N, J, 3) metres.  Returns (N,) mm.  Invariant to any rotation,
    translation and positive scaling of ``pred``.
    """
    p, g, is_np = _check_pair(pred, gt)
    return _out((_procrustes_t(p, g) - g).norm(dim=-1).mean(dim=-1) * M_TO_MM, is_np)


def pve(
    pred_vertices: Array,
    gt_vertices: Array,
    pred_pelvis: Array | None,
    gt_pelvis: Array | None,
) -> Array:
    """Per-vertex error per frame, after subtracting each mesh's pelvis joint.

    pred_vertices, gt_vertices: (N, V, 3) metres (same mesh topology).
    pred_pelvis, gt_pelvis: (N, 3) metres, the pelvis joint of each body; pass both as
        None for camera-space vertex error.
    Returns (N,) mm: the mean over vertices of the Euclidean distance.
    """
    p, g, is_np = _check_pair(pred_vertices, gt_vertices)
    if (pred_pelvis is None) != (gt_pelvis is None):
        raise ValueError("give both pelvis arrays or neither")
    if pred_pelvis is not None and gt_pelvis is not None:
        p = _align_pelvis_t(p, torch.as_tensor(np.asarray(pred_pelvis, np.float64)).to(p))
        g = _align_pelvis_t(g, torch.as_tensor(np.asarray(gt_pelvis, np.float64)).to(g))
    return _out((p - g).norm(dim=-1).mean(dim=-1) * M_TO_MM, is_np)


# ---------------------------------------------------------------------- temporal
def consecutive_runs(frame_idx: np.ndarray, key: np.ndarray | None = None) -> list[slice]:
    """Maximal runs ``[a, b)`` where ``frame_idx`` steps by exactly 1 (and ``key`` is constant).

    frame_idx: (T,) int, sorted increasing.  key: optional (T,) labels (e.g. the matched
    track id); a run also breaks where the label changes.
    """
    f = np.asarray(frame_idx, dtype=np.int64)
    if len(f) == 0:
        return []
    brk = np.diff(f) != 1
    if key is not None:
        k = np.asarray(key)
        brk |= k[1:] != k[:-1]
    starts = np.concatenate([[0], np.nonzero(brk)[0] + 1])
    ends = np.concatenate([starts[1:], [len(f)]])
    return [slice(int(a), int(b)) for a, b in zip(starts, ends)]


def _finite_difference(x: np.ndarray, order: int) -> np.ndarray:
    """order-th forward difference along axis 0: (T, ...) -> (T - order, ...)."""
    return np.diff(x, n=order, axis=0)


def accel_error(
    pred: np.ndarray,
    gt: np.ndarray,
    frame_idx: np.ndarray | None = None,
    align: Align = "pelvis",
    key: np.ndarray | None = None,
) -> np.ndarray:
    """Acceleration error: ``mean_j || a_pred - a_gt ||`` per interior frame.

    pred, gt: (T, J, 3) metres, rows sorted by time.
    frame_idx: (T,) int frame numbers; differences are taken only inside runs of
        consecutive frames (default: all rows consecutive).
    align: "pelvis" (default, as VIBE/TRAM/WHAM) or "none".
    key: optional (T,) labels; runs also break where it changes (e.g. the track id a
        GT person is matched to, so no acceleration spans two different tracks).
    ``a`` is the second finite difference ``x[t+1] - 2 x[t] + x[t-1]`` (per frame^2).
    Returns (M,) mm/frame^2, one value per frame that has both neighbours in its run.
    """
    p, g, _ = _check_pair(np.asarray(pred), np.asarray(gt))
    pred, gt = p.numpy(), g.numpy()
    if align == "pelvis":
        pred, gt = pred - pred[:, PELVIS : PELVIS + 1], gt - gt[:, PELVIS : PELVIS + 1]
    elif align != "none":
        raise ValueError(f"align must be 'pelvis' or 'none', got {align!r}")
    if frame_idx is None:
        frame_idx = np.arange(len(pred))
    out = []
    for run in consecutive_runs(frame_idx, key):
        if run.stop - run.start < 3:
            continue
        d = _finite_difference(pred[run], 2) - _finite_difference(gt[run], 2)
        out.append(np.linalg.norm(d, axis=-1).mean(axis=-1))
    return np.concatenate(out) * M_TO_MM if out else np.zeros(0)


def accel_centres(frame_idx: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
    """Row indices that :func:`accel_error` returns values for (same order).

    frame_idx, key: as for :func:`accel_error`.  Returns (M,) int64: the centre row of
    each second difference, i.e. every row except the first and last of each run of
    three or more.
    """
    out = [np.arange(r.start + 1, r.stop - 1) for r in consecutive_runs(frame_idx, key) if r.stop - r.start >= 3]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def jitter(joints: np.ndarray, frame_idx: np.ndarray | None = None, fps: float = 1.0) -> np.ndarray:
    """GT-free jitter: mean norm of the jerk (third finite difference) per frame.

    joints: (T, J, 3) metres, as given (no alignment: root motion counts).
    frame_idx: (T,) int; differences only inside runs of consecutive frames.
    fps: frames per second; the result is ``||x[t+2] - 3x[t+1] + 3x[t] - x[t-1]|| * fps**3``
        in m/s^3 (fps=1 gives m/frame^3).  Papers print "10 m/s^3": divide by 10.
    Returns (M,) one value per jerk sample (mean over joints).
    """
    x = np.asarray(joints, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected (T, J, 3) joints, got {x.shape}")
    if frame_idx is None:
        frame_idx = np.arange(len(x))
    out = []
    for run in consecutive_runs(frame_idx):
        if run.stop - run.start < 4:
            continue
        out.append(np.linalg.norm(_finite_difference(x[run], 3), axis=-1).mean(axis=-1))
    return np.concatenate(out) * float(fps) ** 3 if out else np.zeros(0)


# --------------------------------------------------------------------- detection
def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Detection precision, recall and F1 from counts (NaN where undefined)."""
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, f
