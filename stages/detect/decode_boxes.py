"""Dense detector maps -> boxes, scores and box-relative person masks.

Inputs are the maps of :class:`~hmrflow.stages.detect.model.DenseDetector` for one image
(already passed through sigmoid where they are probabilities), in *edge coordinates* of the
network input (pixel ``k`` spans ``[k, k + 1)``; see :mod:`.model`):

1. centres are the local maxima (3x3) of the centre heat map above ``score_threshold``,
   the strongest ``max_det`` of them;
2. a centre in cell ``(i, j)`` is at ``((j + 0.5 + offset_x) * stride, (i + 0.5 + offset_y) * stride)``
   and its box is ``exp(size) * stride`` wide and high around it;
3. duplicate peaks of one person are removed by greedy non-maximum suppression
   (IoU > ``nms_iou``; crowds overlap, so this is loose);
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

from hmrflow.pipeline.boxes import nms
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
    heat: torch.Tensor, score_threshold: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local maxima of a (h, w) probability map: (rows (K,), cols (K,), scores (K,)), strongest first."""
    pooled = F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    is_peak = (heat >= pooled) & (heat >= score_threshold)
    rows, cols = torch.nonzero(is_peak, as_tuple=True)
    scores = heat[rows, cols]
    order = torch.argsort(scores, descending=True)[:max_det]
    return rows[order], cols[order], scores[order]


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one image's maps into boxes in input edge coordinates.

    Args:
        heat: (h, w) centre probability; size: (2, h, w) log(w/stride), log(h/stride);
        offset: (2, h, w) centre offset from the cell centre, cells (x, y);
        fg: (h, w) foreground probability; vote: (2, h, w) centre vote / VOTE_SCALE, cells.
    Returns:
        boxes (N, 4) float32 edge coordinates of the network input, scores (N,),
        masks (N, mask_res, mask_res) bool.
    """
    h, w = heat.shape
    rows, cols, scores = find_peaks(heat, score_threshold, max_det)
    cx = (cols.float() + 0.5 + offset[0, rows, cols]) * stride
    cy = (rows.float() + 0.5 + offset[1, rows, cols]) * stride
    bw = torch.exp(size[0, rows, cols].clamp(-6, 6)) * stride
    bh = torch.exp(size[1, rows, cols].clamp(-6, 6)) * stride
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    keep = nms(boxes, scores, nms_iou)
    boxes, scores, cx, cy = boxes[keep], scores[keep], cx[keep], cy[keep]
    n = boxes.shape[0]
    if n == 0:
        return boxes.reshape(0, 4), scores, torch.zeros(0, mask_res, mask_res, dtype=torch.bool)
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
    masks = (s[:, 0] > 0.5) & (owner == torch.arange(n)[:, None, None])
    return boxes, scores, masks


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
