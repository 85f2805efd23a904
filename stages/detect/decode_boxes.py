"""Dense detector maps -> boxes, scores and box-relative person masks.

Inputs are the maps of :class:`~hmrflow.stages.detect.model.DenseDetector` for one image
(already passed through sigmoid where they are probabilities), in *edge coordinates* of the
network input (pixel ``k`` spans ``[k, k + 1)``; see :mod:`.model`):

1. candidate centres are the local maxima (3x3) of the centre heat map above
   ``score_threshold`` *and* the cells next to such a maximum that are above the threshold
   too (``neighbours``): two people who overlap in the image often have their centres in
   adjacent cells (or, in training, are moved to adjacent cells when they share one), and
   a 3x3 maximum keeps only one of the two; the strongest ``max_det`` candidates are kept;
2. a centre in cell ``(i, j)`` is at ``((j + 0.5 + offset_x) * stride, (i + 0.5 + offset_y) * stride)``
   and its box is ``exp(size) * stride`` wide and high around it (the box terms are trained
   at a centre cell's neighbours too, so a neighbour of one person's peak decodes the same
   box and centre);
3. duplicates are removed greedily, strongest first: a candidate goes when its box has IoU >
   ``nms_iou`` with a kept one (crowds overlap, so this is loose), or when it is a
   neighbour candidate whose decoded centre is within ``min_sep`` cells of a kept centre
   (the same person seen from the next cell); a neighbour candidate that survives must also
   own at least ``min_own`` of the foreground cells in its box by the votes of step 4 (a
   second person has pixels of its own that vote for it);
4. masks: each detection's box is sampled on a ``MASK_RES x MASK_RES`` grid; a sample is
   part of the person when the foreground probability is > 0.5 *and* the centre it votes
   for (sample position + vote) is nearer to this detection's centre than to any other's.
   Overlapping people therefore get disjoint masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from hmrflow.pipeline.boxes import box_iou_torch
from hmrflow.pipeline.types import MASK_RES
from hmrflow.stages.detect.model import STRIDE, VOTE_SCALE


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one image.

    boxes_xyxy: (N, 4) float32; scores: (N,) float32 in [0, 1];
    masks: (N, MASK_RES, MASK_RES) bool, row 0 = box top.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    masks: np.ndarray


def find_peaks(
    heat: torch.Tensor, score_threshold: float, max_det: int, neighbours: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate centres of a (h, w) probability map, strongest first.

    Local maxima (3x3) at or above ``score_threshold``; with ``neighbours`` also the cells
    at or above it that touch such a maximum (8-neighbourhood).

    Returns:
        rows (K,), cols (K,), scores (K,), is_peak (K,) bool (False: a neighbour candidate).
    """
    pooled = F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    above = heat >= score_threshold
    is_peak = (heat >= pooled) & above
    cand = is_peak
    if neighbours:
        near_peak = F.max_pool2d(is_peak[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
        cand = near_peak & above
    rows, cols = torch.nonzero(cand, as_tuple=True)
    scores = heat[rows, cols]
    order = torch.argsort(scores, descending=True)[:max_det]
    rows, cols = rows[order], cols[order]
    return rows, cols, scores[order], is_peak[rows, cols]


def suppress(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    centres: torch.Tensor,
    is_peak: torch.Tensor,
    nms_iou: float,
    min_sep: float,
) -> torch.Tensor:
    """Greedy suppression of duplicate candidates (see the module docstring, step 3).

    Args:
        boxes: (K, 4); scores: (K,); centres: (K, 2) decoded centres in cells;
        is_peak: (K,) bool, False for neighbour candidates.
    Returns:
        kept indices (N,) int64, by decreasing score.
    """
    order = torch.argsort(scores, descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou_torch(boxes[order], boxes[order])
    dist = torch.cdist(centres[order], centres[order])
    peak = is_peak[order]
    keep: list[int] = []
    for r in range(order.numel()):
        if keep:
            k = torch.tensor(keep)
            if bool((iou[r, k] > nms_iou).any()) or (not bool(peak[r]) and bool((dist[r, k] < min_sep).any())):
                continue
        keep.append(r)
    return order[torch.tensor(keep, dtype=torch.int64)]


def decode_frame(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    fg: torch.Tensor,
    vote: torch.Tensor,
    *,
    stride: int = STRIDE,
    score_threshold: float = 0.5,
    max_det: int = 100,
    nms_iou: float = 0.7,
    mask_res: int = MASK_RES,
    neighbours: bool = True,
    min_sep: float = 0.5,
    min_own: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one image's maps into boxes in input edge coordinates.

    Args:
        heat: (h, w) centre probability; size: (2, h, w) log(w/stride), log(h/stride);
        offset: (2, h, w) centre offset from the cell centre, cells (x, y);
        fg: (h, w) foreground probability; vote: (2, h, w) centre vote / VOTE_SCALE, cells.
        neighbours, min_sep, min_own: candidates next to a peak and their duplicate tests
            (module docstring, steps 1 and 3); ``neighbours=False`` is plain peak + box NMS.
    Returns:
        boxes (N, 4) float32 edge coordinates of the network input, scores (N,),
        masks (N, mask_res, mask_res) bool.
    """
    h, w = heat.shape
    rows, cols, scores, is_peak = find_peaks(heat, score_threshold, max_det, neighbours)
    cx = (cols.float() + 0.5 + offset[0, rows, cols]) * stride
    cy = (rows.float() + 0.5 + offset[1, rows, cols]) * stride
    bw = torch.exp(size[0, rows, cols].clamp(-6, 6)) * stride
    bh = torch.exp(size[1, rows, cols].clamp(-6, 6)) * stride
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    keep = suppress(boxes, scores, torch.stack([cx, cy], -1) / stride, is_peak, nms_iou, min_sep)
    boxes, scores, cx, cy, is_peak = boxes[keep], scores[keep], cx[keep], cy[keep], is_peak[keep]
    masks = _vote_masks(boxes, cx, cy, fg, vote, stride, mask_res)
    if min_own > 0 and not bool(is_peak.all()):
        # a neighbour candidate without foreground of its own is the edge of another person's peak
        own = masks.float().mean((1, 2))
        ok = is_peak | (own >= min_own)
        if not bool(ok.all()):
            boxes, scores, cx, cy = boxes[ok], scores[ok], cx[ok], cy[ok]
            masks = _vote_masks(boxes, cx, cy, fg, vote, stride, mask_res)
    return boxes, scores, masks


def _vote_masks(
    boxes: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    fg: torch.Tensor,
    vote: torch.Tensor,
    stride: int,
    mask_res: int,
) -> torch.Tensor:
    """Box-relative masks (N, mask_res, mask_res) bool: foreground samples whose vote lands
    nearest to this detection's centre (cx, cy: (N,) input edge coordinates)."""
    h, w = fg.shape
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, mask_res, mask_res, dtype=torch.bool)
    # sample points: centres of a mask_res x mask_res grid inside each box (edge coordinates)
    t = (torch.arange(mask_res, dtype=torch.float32) + 0.5) / mask_res
    px = boxes[:, 0, None] + t[None] * (boxes[:, 2] - boxes[:, 0])[:, None]  # (N, R)
    py = boxes[:, 1, None] + t[None] * (boxes[:, 3] - boxes[:, 1])[:, None]
    gx = px[:, None, :].expand(n, mask_res, mask_res)
    gy = py[:, :, None].expand(n, mask_res, mask_res)
    grid = torch.stack([gx / (w * stride) * 2 - 1, gy / (h * stride) * 2 - 1], -1)  # (N, R, R, 2)
    maps = torch.cat([fg[None], vote], 0)[None].expand(n, 3, h, w)
    s = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (N, 3, R, R)
    vx = gx + s[:, 1] * VOTE_SCALE * stride
    vy = gy + s[:, 2] * VOTE_SCALE * stride
    d2 = (vx[..., None] - cx) ** 2 + (vy[..., None] - cy) ** 2  # (N, R, R, N)
    owner = d2.argmin(-1)
    return (s[:, 0] > 0.5) & (owner == torch.arange(n)[:, None, None])


def to_image_coords(boxes_edge: torch.Tensor, scale_xy: tuple[float, float], width: int, height: int) -> np.ndarray:
    """Input edge-coordinate boxes -> (N, 4) float32 image pixels (OpenCV centre convention),
    clipped to the image ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.

    ``scale_xy`` is the resize factor image -> network input of each axis.
    """
    s = torch.tensor([scale_xy[0], scale_xy[1], scale_xy[0], scale_xy[1]], dtype=torch.float32)
    b = boxes_edge / s
    b[:, 0::2] = b[:, 0::2].clamp(0, width)
    b[:, 1::2] = b[:, 1::2].clamp(0, height)
    return (b - 0.5).numpy().astype(np.float32)
