"""Float windows of uint8 frames and exact 2x area shrinking: the sampling primitives the crop
and appearance code share.

Frames are (H, W, 3) uint8 RGB, channels last, as decoded.  Converting a whole 1080p frame to
float costs more than sampling a few people from it, so callers convert only the window
their samples need, and halve it with OpenCV's area filter (exact 2x2 block means for even
sizes, in float32) rather than torch's average pooling on a channels-first copy.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def frame_window(frame: np.ndarray | torch.Tensor, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """(H, W, 3) uint8 frame -> (h, w, 3) float32 window with top-left pixel (x0, y0), values
    0..255; zeros where the window leaves the frame."""
    src = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + w, src.shape[1]), min(y0 + h, src.shape[0])
    inside = xa == x0 and ya == y0 and xb == x0 + w and yb == y0 + h
    if inside:
        return src[ya:yb, xa:xb].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    if xb > xa and yb > ya:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = src[ya:yb, xa:xb]
    return out


def halve(window: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 with even h and w -> (h/2, w/2, 3): the mean of every 2x2 block."""
    h, w = window.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"halve needs even sizes, got {h}x{w}")
    return cv2.resize(window, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def as_nchw(window: np.ndarray) -> torch.Tensor:
    """(h, w, 3) float32 -> (1, 3, h, w) tensor view (channels-last strides, no copy)."""
    return torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)[None]
