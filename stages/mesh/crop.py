"""Person crops for the ViT, made explicitly (never inside ``forward()``).

Geometry, as in HMR2.0 (read in shubham-goel/4D-Humans @ 6ec7965,
``hmr2/datasets/vitdet_dataset.py``, ``hmr2/datasets/utils.py::expand_to_aspect_ratio`` and
``hmr2/models/__init__.py`` where ``BBOX_SHAPE = [192, 256]``; the code here is our own):

* box centre ``c = (x1 + x2, y1 + y2) / 2``; the box (times a rescale factor) is expanded to the
  crop aspect W:H = 192:256 and its height ``b`` (HMR2's ``box_size``) is the crop height in
  image pixels: ``b = rescale * max(h, w * 256 / 192)``.  HMR2 warps a b x b square to 256 x 256
  and feeds the ViT the middle 192 columns, which is exactly a b x (0.75 b) region resampled to
  256 x 192: that is what we sample directly.  4D-Humans' demo uses rescale 1.0 on ViTDet boxes;
  hmrflow defaults to 1.2 so tight detector boxes keep some context.
* pixels outside the image are black (``cv2.BORDER_CONSTANT`` 0) before ImageNet
  normalisation (mean 0.485 0.456 0.406, std 0.229 0.224 0.225 on [0, 1] RGB).
* HMR2 Gaussian-blurs strong downsamplings; we sample from a 2x area-averaged pyramid level
  instead, chosen per box so that the remaining bilinear step shrinks by less than 2.

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), so a crop pixel
centre (u, v) (in [0, W), [0, H)) maps to the image point ``c + (u - W/2, v - H/2) * b / H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from hmrflow.pipeline.images import as_nchw, frame_window, halve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Default context factor applied to detector boxes before the aspect expansion.
DEFAULT_RESCALE = 1.2


@dataclass
class CropBoxes:
    """Where crops come from: the crop -> image affine.

    center: (N, 2) float32 image pixels (x, y) of the crop centre.
    size: (N,) float32 crop height ``b`` in image pixels (HMR2's ``box_size``); the crop width in
        image pixels is ``b * W / H`` for crops of (H, W).
    """

    center: torch.Tensor
    size: torch.Tensor

    def __len__(self) -> int:
        return int(self.center.shape[0])


@dataclass
class Crops:
    """Crops ready for the estimator.

    images: (N, 3, H, W) float32, ImageNet-normalised.
    boxes: the crop -> image affine (:class:`CropBoxes`), needed for the camera conversion.
    token_masks: (N, gh, gw) float32 person coverage of each token cell in [0, 1], or None.
    """

    images: torch.Tensor
    boxes: CropBoxes
    token_masks: Optional[torch.Tensor] = None


def crop_boxes_from_xyxy(
    boxes_xyxy: torch.Tensor | np.ndarray,
    crop_hw: tuple[int, int] = (256, 192),
    rescale: float = DEFAULT_RESCALE,
) -> CropBoxes:
    """Detector boxes (N, 4) xyxy pixels -> crop boxes of aspect ``crop_hw`` (HMR2's rule)."""
    boxes = torch.as_tensor(np.asarray(boxes_xyxy) if not isinstance(boxes_xyxy, torch.Tensor) else boxes_xyxy)
    boxes = boxes.to(torch.float32).reshape(-1, 4)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0) * rescale
    h_over_w = crop_hw[0] / crop_hw[1]
    size = torch.maximum(wh[:, 1], wh[:, 0] * h_over_w)
    return CropBoxes(center=center, size=size)


def crop_to_image(points: torch.Tensor, boxes: CropBoxes, crop_hw: tuple[int, int]) -> torch.Tensor:
    """Crop pixel coordinates (N, ..., 2) -> image pixel coordinates (N, ..., 2)."""
    h, w = crop_hw
    half = points.new_tensor([w / 2, h / 2])
    shape = (len(boxes),) + (1,) * (points.ndim - 2)
    scale = (boxes.size / h).reshape(shape + (1,)).to(points)
    return boxes.center.reshape(shape + (2,)).to(points) + (points - half) * scale


def image_to_crop(points: torch.Tensor, boxes: CropBoxes, crop_hw: tuple[int, int]) -> torch.Tensor:
    """Image pixel coordinates (N, ..., 2) -> crop pixel coordinates (N, ..., 2)."""
    h, w = crop_hw
    half = points.new_tensor([w / 2, h / 2])
    shape = (len(boxes),) + (1,) * (points.ndim - 2)
    scale = (h / boxes.size).reshape(shape + (1,)).to(points)
    return (points - boxes.center.reshape(shape + (2,)).to(points)) * scale + half


def _pixel_centres(grid_hw: tuple[int, int], cell_hw: tuple[float, float], sub: int = 1) -> torch.Tensor:
    """(gh*sub, gw*sub, 2) crop coordinates (x, y) of sub-cell centres of a gh x gw grid."""
    gh, gw = grid_hw
    ys = (torch.arange(gh * sub, dtype=torch.float32) + 0.5) * (cell_hw[0] / sub)
    xs = (torch.arange(gw * sub, dtype=torch.float32) + 0.5) * (cell_hw[1] / sub)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def _crop_pixels_in_image(boxes: CropBoxes, crop_hw: tuple[int, int]) -> torch.Tensor:
    """Image coordinates (N, H, W, 2) of every crop pixel centre."""
    pts = _pixel_centres(crop_hw, (1.0, 1.0)).expand(len(boxes), -1, -1, -1)
    return crop_to_image(pts, boxes, crop_hw)


def crop_images(
    frames: torch.Tensor | np.ndarray,
    frame_index: torch.Tensor | np.ndarray,
    boxes: CropBoxes,
    crop_hw: tuple[int, int] = (256, 192),
    antialias: bool = True,
) -> torch.Tensor:
    """Bilinear crops from uint8 frames, normalised for the ViT.

    frames: (F, H, W, 3) uint8 RGB; frame_index: (N,) index into frames for each box.
    Returns (N, 3, crop_h, crop_w) float32 ImageNet-normalised (outside the image = black).
    Per frame only the window covering its boxes is converted to float, 2x area-averaged
    once per pyramid level needed (``antialias``; :mod:`hmrflow.pipeline.images`), and all
    boxes of a level are sampled in one ``grid_sample`` call.
    """
    frames_t = torch.as_tensor(frames)
    if frames_t.ndim != 4 or frames_t.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {tuple(frames_t.shape)}")
    frames_np = frames_t.cpu().numpy()
    idx = torch.as_tensor(np.asarray(frame_index) if not isinstance(frame_index, torch.Tensor) else frame_index).long()
    n = len(boxes)
    if idx.shape != (n,):
        raise ValueError(f"frame_index must have shape ({n},), got {tuple(idx.shape)}")
    if n and (idx.min() < 0 or idx.max() >= frames_t.shape[0]):
        raise IndexError(f"frame_index out of range for {frames_t.shape[0]} frames")
    ch, cw = crop_hw
    out = torch.empty(n, 3, ch, cw)  # every row is written below
    # pyramid level per box: image pixels per crop pixel, halved until below 2
    shrink = (boxes.size / ch).clamp_min(1.0)
    levels = torch.floor(torch.log2(shrink)).long().clamp_min(0) if antialias else torch.zeros(n, dtype=torch.long)
    for f in torch.unique(idx).tolist():
        sel_f = (idx == f).nonzero().flatten()
        sub = CropBoxes(boxes.center[sel_f], boxes.size[sel_f])
        pix = _crop_pixels_in_image(sub, crop_hw)  # (k, ch, cw, 2)
        top = int(levels[sel_f].max())
        step = 2**top
        # window holding every sample (+1 px for bilinear), a multiple of 2^top pixels wide/high
        # (clipped to the frame +- one step: beyond it grid_sample's zero padding is black too)
        frame_wh = torch.tensor([frames_t.shape[2], frames_t.shape[1]])
        # the grid is affine in each box with a positive scale: its extremes are the corner pixels
        corners = pix[:, [0, -1]][:, :, [0, -1]].reshape(-1, 2)
        lo = (torch.floor(corners.amin(0)).long() - step).clamp(min=-step)
        hi = torch.minimum(torch.ceil(corners.amax(0)).long() + step, frame_wh + step)
        hi = torch.maximum(hi, lo + step)
        # origin on the absolute 2^top grid: pooled pixels are the same blocks whatever the
        # window, so a crop never depends on the other boxes of its frame
        x0, y0 = (int(v) for v in torch.div(lo, step, rounding_mode="floor") * step)
        w = -(-(int(hi[0]) - x0) // step) * step
        h = -(-(int(hi[1]) - y0) // step) * step
        win = frame_window(frames_np[f], x0, y0, w, h)  # (h, w, 3) float32 in [0, 255]
        extent = torch.tensor([float(w), float(h)])
        grid = (pix - torch.tensor([float(x0), float(y0)])).div_(extent).mul_(2).sub_(1)
        level = 0
        for lv in sorted(set(levels[sel_f].tolist())):
            while level < lv:  # exact 2x area average: the level still spans the same window
                win = halve(win)
                level += 1
            img = as_nchw(win)
            pick = (levels[sel_f] == lv).nonzero().flatten()
            g = grid[pick].reshape(1, len(pick) * ch, cw, 2)  # stack crops along the height
            sampled = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[sel_f[pick]] = sampled.reshape(3, len(pick), ch, cw).transpose(0, 1)
    return imagenet_normalise_(out)


def imagenet_normalise_(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float RGB on the 0..255 scale -> ImageNet-normalised, in place (returned)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1) * 255.0
    return images.sub_(mean).div_(std)


def normalise_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB crops -> (N, 3, H, W) float32 ImageNet-normalised (what the ViT takes)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    return imagenet_normalise_(x)


def crop_masks(
    masks: torch.Tensor | np.ndarray,
    boxes_xyxy: torch.Tensor | np.ndarray,
    boxes: CropBoxes,
    crop_hw: tuple[int, int] = (256, 192),
    token_grid: tuple[int, int] = (16, 12),
    supersample: int = 4,
) -> torch.Tensor:
    """Box-relative person masks -> person coverage of each token cell of the crop.

    masks: (N, R, R) bool/float, the mask resampled to its detector box (row 0 = box top).
    boxes_xyxy: (N, 4) the detector boxes the masks refer to; boxes: the crop boxes.
    Returns (N, gh, gw) float32 in [0, 1]: the fraction of each token's 16 x 16 cell covered by
    the person (``supersample``^2 bilinear samples per cell; zero outside the detector box).
    Token cells are the crop divided evenly into gh x gw (the 2 px padding offset of the patch
    convolution is ignored: 1/8 of a cell).
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).to(torch.float32)
    det = torch.as_tensor(np.asarray(boxes_xyxy) if not isinstance(boxes_xyxy, torch.Tensor) else boxes_xyxy)
    det = det.to(torch.float32).reshape(-1, 4)
    n = len(boxes)
    if m.ndim != 3 or m.shape[0] != n or det.shape[0] != n:
        raise ValueError(
            f"masks (N, R, R) and boxes (N, 4) must match {n} crop boxes, got {tuple(m.shape)}, {tuple(det.shape)}"
        )
    gh, gw = token_grid
    cell = (crop_hw[0] / gh, crop_hw[1] / gw)
    pts = _pixel_centres(token_grid, cell, supersample).expand(n, -1, -1, -1)
    img = crop_to_image(pts, boxes, crop_hw)  # (N, gh*s, gw*s, 2) image pixels
    wh = (det[:, 2:] - det[:, :2]).clamp_min(1e-6)
    rel = (img - det[:, None, None, :2]) / wh[:, None, None, :]  # box-relative in [0, 1]
    # bilinear inside the box (edge values held up to the box border), zero outside it
    sampled = F.grid_sample(m[:, None], rel * 2 - 1, mode="bilinear", padding_mode="border", align_corners=False)
    inside = ((rel >= 0) & (rel <= 1)).all(dim=-1)[:, None].to(sampled.dtype)
    return F.avg_pool2d(sampled * inside, supersample)[:, 0]


def make_crops(
    frames: torch.Tensor | np.ndarray,
    frame_index: torch.Tensor | np.ndarray,
    boxes_xyxy: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray | None = None,
    crop_hw: tuple[int, int] = (256, 192),
    token_grid: tuple[int, int] = (16, 12),
    rescale: float = DEFAULT_RESCALE,
) -> Crops:
    """Detections -> :class:`Crops` (images, the crop -> image affine, token-cell masks)."""
    boxes = crop_boxes_from_xyxy(boxes_xyxy, crop_hw, rescale)
    images = crop_images(frames, frame_index, boxes, crop_hw)
    token_masks = None if masks is None else crop_masks(masks, boxes_xyxy, boxes, crop_hw, token_grid)
    return Crops(images=images, boxes=boxes, token_masks=token_masks)
