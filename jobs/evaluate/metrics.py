"""Pose, motion and box metrics in pure NumPy.

Units: every input position is in **metres**; every error this module returns is in
**millimetres** (``mm``), accelerations in ``mm/frame^2``, jitter in ``m/s^3`` (or
``m/frame^3`` with ``fps=1``).  Functions return one value per sample (per frame, or
per frame and person) so callers can average, weight and split them as they need
(e.g. observed vs refinement-filled frames); ``np.mean`` of the result is the usual
figure.

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

from typing import Literal

import numpy as np

#: index of the pelvis (root) joint in the SMPL joint order
PELVIS = 0
M_TO_MM = 1000.0

Align = Literal["pelvis", "none"]


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"expected two (N, J, 3) arrays of equal shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def align_pelvis(joints: np.ndarray, pelvis: np.ndarray | None = None) -> np.ndarray:
    """Subtract the pelvis: joints (N, J, 3) minus pelvis (N, 3) (default: joints[:, 0])."""
    joints = np.asarray(joints, dtype=np.float64)
    root = joints[:, PELVIS] if pelvis is None else np.asarray(pelvis, dtype=np.float64)
    return joints - root[:, None, :]


def mpjpe(pred: np.ndarray, gt: np.ndarray, align: Align = "pelvis") -> np.ndarray:
    """Mean per-joint position error per frame.

    pred, gt: (N, J, 3) metres, SMPL joint order (joint 0 = pelvis).
    align: "pelvis" subtracts each skeleton's pelvis joint first; "none" compares
        camera-space positions.
    Returns (N,) mm: the mean over joints of the Euclidean distance.
    """
    pred, gt = _check_pair(pred, gt)
    if align == "pelvis":
        pred, gt = align_pelvis(pred), align_pelvis(gt)
    elif align != "none":
        raise ValueError(f"align must be 'pelvis' or 'none', got {align!r}")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * M_TO_MM


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Best similarity transform of each ``pred[i]`` onto ``gt[i]`` (Umeyama 1991).

    pred, gt: (N, J, 3).  Returns (N, J, 3) = s_i R_i pred_i + t_i minimising the
    squared distance to gt_i, with R_i a proper rotation (det = +1: a reflection is
    never used, even when it would fit better) and s_i >= 0.
    """
    pred, gt = _check_pair(pred, gt)
    mu_p = pred.mean(axis=1, keepdims=True)
    mu_g = gt.mean(axis=1, keepdims=True)
    x = pred - mu_p
    y = gt - mu_g
    var_x = (x**2).sum(axis=(1, 2))  # (N,)
    h = np.einsum("njk,njl->nkl", x, y)  # (N, 3, 3) = x^T y
    u, s, vt = np.linalg.svd(h)
    v = np.swapaxes(vt, 1, 2)
    ut = np.swapaxes(u, 1, 2)
    d = np.sign(np.linalg.det(v @ ut))  # -1 where the optimum would be a reflection
    d[d == 0] = 1.0
    dmat = np.tile(np.eye(3), (len(pred), 1, 1))
    dmat[:, 2, 2] = d
    rot = v @ dmat @ ut  # (N, 3, 3), maps pred -> gt
    trace = s[:, 0] + s[:, 1] + d * s[:, 2]
    scale = np.where(var_x > 1e-20, trace / np.maximum(var_x, 1e-20), 0.0)
    return scale[:, None, None] * np.einsum("nkl,njl->njk", rot, x) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """MPJPE after per-frame similarity Procrustes alignment of pred onto gt.

    pred, gt: (N, J, 3) metres.  Returns (N,) mm.  Invariant to any rotation,
    translation and positive scaling of ``pred``.
    """
    pred, gt = _check_pair(pred, gt)
    aligned = procrustes_align(pred, gt)
    return np.linalg.norm(aligned - gt, axis=-1).mean(axis=-1) * M_TO_MM


def pve(
    pred_vertices: np.ndarray,
    gt_vertices: np.ndarray,
    pred_pelvis: np.ndarray | None,
    gt_pelvis: np.ndarray | None,
) -> np.ndarray:
    """Per-vertex error per frame, after subtracting each mesh's pelvis joint.

    pred_vertices, gt_vertices: (N, V, 3) metres (same mesh topology).
    pred_pelvis, gt_pelvis: (N, 3) metres, the pelvis joint of each body; pass both as
        None for camera-space vertex error.
    Returns (N,) mm: the mean over vertices of the Euclidean distance.
    """
    pred, gt = _check_pair(pred_vertices, gt_vertices)
    if (pred_pelvis is None) != (gt_pelvis is None):
        raise ValueError("give both pelvis arrays or neither")
    if pred_pelvis is not None:
        pred = align_pelvis(pred, pred_pelvis)
        gt = align_pelvis(gt, gt_pelvis)
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * M_TO_MM


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
    pred, gt = _check_pair(pred, gt)
    if align == "pelvis":
        pred, gt = align_pelvis(pred), align_pelvis(gt)
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


# ------------------------------------------------------------------------- boxes
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of xyxy boxes: a (N, 4), b (M, 4) -> (N, M).

    A box with a NaN coordinate or zero area has IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(iou, nan=0.0)


def project_box(points: np.ndarray, K: np.ndarray, width: int, height: int, min_depth: float = 1e-3) -> np.ndarray:
    """Image box of camera-frame points projected with intrinsics K, clipped to the image.

    points: (..., V, 3) metres, OpenCV camera frame; K: (3, 3).
    Points with depth <= min_depth are ignored.  Returns (..., 4) float64 xyxy pixels;
    NaN where no point is in front of the camera or the clipped box is empty.
    """
    p = np.asarray(points, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    z = p[..., 2]
    front = z > min_depth
    zs = np.where(front, z, 1.0)
    u = K[0, 0] * p[..., 0] / zs + K[0, 1] * p[..., 1] / zs + K[0, 2]
    v = K[1, 1] * p[..., 1] / zs + K[1, 2]
    big = np.inf
    x0 = np.where(front, u, big).min(axis=-1)
    y0 = np.where(front, v, big).min(axis=-1)
    x1 = np.where(front, u, -big).max(axis=-1)
    y1 = np.where(front, v, -big).max(axis=-1)
    box = np.stack([np.clip(x0, 0, width), np.clip(y0, 0, height), np.clip(x1, 0, width), np.clip(y1, 0, height)], -1)
    empty = ~front.any(axis=-1) | (box[..., 2] <= box[..., 0]) | (box[..., 3] <= box[..., 1])
    box[empty] = np.nan
    return box


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Detection precision, recall and F1 from counts (NaN where undefined)."""
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, f
