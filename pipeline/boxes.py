"""Box geometry: the one home of box IoU, non-maximum suppression, IoU matching and box projection.

Boxes are ``xyxy`` pixels everywhere in hmrflow (see :mod:`hmrflow.pipeline.types`).  The
detector, its training scores, the tracker, evaluation and the benchmarks all use these
functions, so a published F1 and a tracking gate measure overlap the same way.

NumPy functions work in float64; the torch twins (:func:`box_iou_torch`, :func:`nms`) run on
the tensors' device.  torch is imported lazily (the CLI imports ``pipeline`` early).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of xyxy boxes: a (N, 4), b (M, 4) -> (N, M) float64 in [0, 1].

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


def box_iou_torch(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """(N, 4) x (M, 4) xyxy tensors -> (N, M) IoU (0 for empty boxes); the torch twin of :func:`box_iou`."""
    import torch

    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


def nms(boxes: "torch.Tensor", scores: "torch.Tensor", iou_threshold: float) -> "torch.Tensor":
    """Greedy non-maximum suppression: boxes (N, 4), scores (N,) -> kept indices (K,) int64,
    by decreasing score; a box is dropped when its IoU with a kept, higher-scoring one exceeds
    ``iou_threshold``."""
    import torch

    order = torch.argsort(scores, descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou_torch(boxes[order], boxes[order])
    keep: list[int] = []
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    for r in range(order.numel()):
        if suppressed[r]:
            continue
        keep.append(r)
        suppressed |= iou[r] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def match_iou(iou: np.ndarray, gate: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matching of rows to columns that maximises total IoU over pairs with IoU >= ``gate``.

    iou: (N, M).  Pairs under the gate get a cost no gated pair can beat, then are dropped,
    so a row is never matched below the gate to make room for another.  Returns ``(row, col)``
    pairs sorted by row (Hungarian, ``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment

    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return []
    cost = np.where(iou >= gate, -iou, 1.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= gate]


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
