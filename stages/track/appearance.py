"""Appearance descriptors of detected people: clothing colour per body region, under the person mask.

A descriptor summarises the pixels of one detection that its person mask owns (masks of
overlapping people are disjoint, see :mod:`hmrflow.stages.detect.decode_boxes`), in three
horizontal bands of the box (head, torso, legs), in CIE Lab (perceptual) colour:

* a **hue histogram** (``HUE_BINS`` circular bins of the angle in the a-b plane), each pixel
  weighted by its chroma, so greys and shadows add little and the same cloth lit more or less
  brightly falls in the same bins;
* a **lightness histogram** (``L_BINS`` bins of L*), which tells dark from light clothing;
* the band's **mask fraction**: how much of the band the person covers (0 = unseen band).

Layout of one row (``APPEARANCE_DIM`` = 3 x (HUE_BINS + L_BINS + 1) float32): per band, the
hue histogram and the lightness histogram (each summing to 1, or all zero when the band has
no masked pixel), then the fraction.  An all-zero row means "no appearance known" (e.g. rows
made by a stage that computes none) and is ignored by :func:`appearance_distance`.

Bins are soft (linear interpolation between neighbouring bin centres), so a small colour
shift moves weight between bins instead of jumping.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hmrflow.pipeline.images import as_nchw, frame_window
from hmrflow.pipeline.types import APPEARANCE_DIM

#: Bands of the box height (top, bottom) as fractions: head, torso, legs.
BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.2), (0.2, 0.55), (0.55, 1.0))
HUE_BINS = 12
L_BINS = 4
#: Samples per box (rows x columns) from which the histograms are built.
SAMPLE_HW = (48, 24)
#: Chroma (Lab units) at which a pixel's hue counts half: greys carry no hue.
CHROMA_HALF = 12.0
PER_BAND = HUE_BINS + L_BINS + 1

assert len(BANDS) * PER_BAND == APPEARANCE_DIM, "APPEARANCE_DIM must match the band layout"


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIE Lab (D65): L in [0, 100], a and b about [-128, 127]."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
        dtype=rgb.dtype,
        device=rgb.device,
    )
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device)
    eps = 216.0 / 24389.0
    f = torch.where(xyz > eps, xyz.clamp_min(1e-12) ** (1.0 / 3.0), (24389.0 / 27.0 * xyz + 16.0) / 116.0)
    lab_l = 116.0 * f[..., 1] - 16.0
    lab_a = 500.0 * (f[..., 0] - f[..., 1])
    lab_b = 200.0 * (f[..., 1] - f[..., 2])
    return torch.stack([lab_l, lab_a, lab_b], -1)


def _soft_bins(x: torch.Tensor, n_bins: int, circular: bool) -> torch.Tensor:
    """Values ``x`` (...,) in bin units [0, n_bins) -> (..., n_bins) linear soft assignment."""
    centre = x - 0.5
    lo = torch.floor(centre)
    w_hi = centre - lo
    lo_i, hi_i = lo.long(), lo.long() + 1
    if circular:
        lo_i, hi_i = lo_i % n_bins, hi_i % n_bins
    else:
        # below the first / above the last centre all weight stays in the end bin
        w_hi = torch.where(lo_i < 0, torch.ones_like(w_hi), w_hi)
        w_hi = torch.where(hi_i > n_bins - 1, torch.zeros_like(w_hi), w_hi)
        lo_i, hi_i = lo_i.clamp(0, n_bins - 1), hi_i.clamp(0, n_bins - 1)
    out = torch.zeros(*x.shape, n_bins, dtype=x.dtype, device=x.device)
    out.scatter_add_(-1, lo_i[..., None], (1.0 - w_hi)[..., None])
    out.scatter_add_(-1, hi_i[..., None], w_hi[..., None])
    return out


def _sample_points(boxes: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of an ``hw`` grid inside each box: (N, h, w) x and y in image pixels (pixel k at k)."""
    h, w = hw
    ty = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    tx = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    # boxes are the box's edges in pixel-centre coordinates (pixel k spans [k - 0.5, k + 0.5])
    x0, y0 = boxes[:, 0], boxes[:, 1]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    px = x0[:, None, None] + tx[None, None, :] * bw[:, None, None]
    py = y0[:, None, None] + ty[None, :, None] * bh[:, None, None]
    return px.expand(-1, h, w), py.expand(-1, h, w)


def describe(
    images: np.ndarray | torch.Tensor,
    frame_index: np.ndarray,
    boxes_xyxy: np.ndarray,
    masks: np.ndarray,
) -> np.ndarray:
    """Appearance descriptors of detections (see module docstring).

    images: (F, H, W, 3) uint8 RGB frames; frame_index: (N,) index into ``images`` of each
    detection; boxes_xyxy: (N, 4) pixels; masks: (N, R, R) bool, the person mask resampled to
    its box (row 0 = box top).  Returns (N, APPEARANCE_DIM) float32.
    """
    n = len(boxes_xyxy)
    if n == 0:
        return np.zeros((0, APPEARANCE_DIM), np.float32)
    frames = torch.as_tensor(np.asarray(images))
    fh, fw = int(frames.shape[1]), int(frames.shape[2])
    boxes = torch.as_tensor(np.asarray(boxes_xyxy, np.float32))
    idx = torch.as_tensor(np.asarray(frame_index, np.int64))
    px, py = _sample_points(boxes, SAMPLE_HW)
    rgb = torch.zeros(n, 3, *SAMPLE_HW)
    for f in torch.unique(idx).tolist():  # one frame at a time: never a copy of every frame per row
        sel = (idx == f).nonzero().flatten()
        sx, sy = px[sel], py[sel]
        # only the window the samples touch (bilinear neighbours included) becomes float
        x0, y0 = int(np.floor(float(sx.min()))) - 1, int(np.floor(float(sy.min()))) - 1
        w, h = int(np.ceil(float(sx.max()))) + 2 - x0, int(np.ceil(float(sy.max()))) + 2 - y0
        img = as_nchw(frame_window(frames[f], x0, y0, w, h) / np.float32(255.0))
        grid = torch.stack([(sx - x0 + 0.5) / w * 2 - 1, (sy - y0 + 0.5) / h * 2 - 1], -1)  # (k, h, w, 2)
        rgb[sel] = F.grid_sample(
            img.expand(len(sel), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    inside = ((px >= -0.5) & (px <= fw - 0.5) & (py >= -0.5) & (py <= fh - 0.5)).float()
    m = torch.as_tensor(np.asarray(masks)).float()[:, None]
    owned = F.interpolate(m, size=SAMPLE_HW, mode="nearest")[:, 0] * inside  # (N, h, w)
    lab = srgb_to_lab(rgb.permute(0, 2, 3, 1).clamp(0, 1))  # (N, h, w, 3)
    chroma = torch.hypot(lab[..., 1], lab[..., 2])
    hue = (torch.atan2(lab[..., 2], lab[..., 1]) / (2 * np.pi)) % 1.0 * HUE_BINS
    hue_w = chroma / (chroma + CHROMA_HALF)
    hue_h = _soft_bins(hue, HUE_BINS, circular=True) * (hue_w * owned)[..., None]
    l_h = _soft_bins(lab[..., 0].clamp(0, 100) / 100.0 * L_BINS, L_BINS, circular=False) * owned[..., None]
    out = torch.zeros(n, APPEARANCE_DIM)
    h = SAMPLE_HW[0]
    for k, (top, bottom) in enumerate(BANDS):
        rows = slice(int(round(top * h)), int(round(bottom * h)))
        hh = hue_h[:, rows].sum((1, 2))
        lh = l_h[:, rows].sum((1, 2))
        frac = owned[:, rows].mean((1, 2))
        o = k * PER_BAND
        out[:, o : o + HUE_BINS] = hh / hh.sum(-1, keepdim=True).clamp_min(1e-6)
        out[:, o + HUE_BINS : o + HUE_BINS + L_BINS] = lh / lh.sum(-1, keepdim=True).clamp_min(1e-6)
        out[:, o + PER_BAND - 1] = frac
    return out.numpy().astype(np.float32)


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., APPEARANCE_DIM) -> hue (..., B, HUE_BINS), lightness (..., B, L_BINS), fraction (..., B).

    The histograms are renormalised to sum to 1 (or stay 0): a weighted mean of descriptors, some
    of which did not see a band, is then that band's mixture over the views that saw it."""
    d = np.asarray(x, np.float64).reshape(*np.shape(x)[:-1], len(BANDS), PER_BAND)
    hue, light = d[..., :HUE_BINS], d[..., HUE_BINS : HUE_BINS + L_BINS]
    hue = hue / np.maximum(hue.sum(-1, keepdims=True), 1e-12)
    light = light / np.maximum(light.sum(-1, keepdims=True), 1e-12)
    return hue, light, d[..., -1]


def appearance_distance(a: np.ndarray, b: np.ndarray, min_frac: float = 0.05) -> np.ndarray:
    """Pairwise appearance distances: a (T, D), b (M, D) -> (T, M) in [0, 1], NaN where unknown.

    Per band, the Hellinger distance of the hue histograms and of the lightness histograms
    (averaged), weighted by how much of the band both detections show (the geometric mean of
    their fractions); bands either shows less than ``min_frac`` of are skipped.  NaN when no
    band is shown by both (e.g. an all-zero "unknown" row).
    """
    ha, la, fa = _split(a)
    hb, lb, fb = _split(b)
    # Hellinger distance sqrt(1 - BC) with BC the Bhattacharyya coefficient
    bc_h = np.einsum("tkh,mkh->tmk", np.sqrt(ha), np.sqrt(hb))
    bc_l = np.einsum("tkl,mkl->tmk", np.sqrt(la), np.sqrt(lb))
    d = 0.5 * (np.sqrt(np.clip(1.0 - bc_h, 0, 1)) + np.sqrt(np.clip(1.0 - bc_l, 0, 1)))  # (T, M, K)
    w = np.sqrt(np.clip(fa[:, None, :], 0, None) * np.clip(fb[None, :, :], 0, None))
    w = np.where((fa[:, None, :] >= min_frac) & (fb[None, :, :] >= min_frac), w, 0.0)
    wsum = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, (w * d).sum(-1) / np.where(wsum > 0, wsum, 1.0), np.nan)


def appearance_distance_rows(a: np.ndarray, b: np.ndarray, min_frac: float = 0.05) -> np.ndarray:
    """Row-wise :func:`appearance_distance`: a (N, D), b (N, D) -> (N,) (row i of a against row i of b)."""
    ha, la, fa = _split(a)
    hb, lb, fb = _split(b)
    bc_h = (np.sqrt(ha) * np.sqrt(hb)).sum(-1)
    bc_l = (np.sqrt(la) * np.sqrt(lb)).sum(-1)
    d = 0.5 * (np.sqrt(np.clip(1.0 - bc_h, 0, 1)) + np.sqrt(np.clip(1.0 - bc_l, 0, 1)))  # (N, K)
    w = np.sqrt(np.clip(fa, 0, None) * np.clip(fb, 0, None))
    w = np.where((fa >= min_frac) & (fb >= min_frac), w, 0.0)
    wsum = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, (w * d).sum(-1) / np.where(wsum > 0, wsum, 1.0), np.nan)


def appearance_evidence(d: np.ndarray, same: float, other: float) -> np.ndarray:
    """Appearance distances -> evidence in [-1.5, 3]: -1 at the typical distance of a detection to
    its own person (``same``), +1 at the typical distance to someone else (``other``), 0 halfway
    and where unknown (NaN).  Costs add it with a weight, so a good match lowers a pair's cost."""
    z = (np.asarray(d, np.float64) - 0.5 * (same + other)) / (0.5 * (other - same))
    return np.where(np.isfinite(z), np.clip(z, -1.5, 3.0), 0.0)
