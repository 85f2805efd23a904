"""Scale-adaptive tokens (SAT-HMR), the first part of the one-stage path (issue 20, in progress).

Facts taken from the SAT-HMR paper summary (``../shared/seeds``); the code is ours:

* A patch-level scale map gives, per low-resolution token, ``(c, s)``: ``c`` whether the patch
  covers a person, ``s = min(box diagonal / longest image side, 1)`` that person's scale (the
  nearest person where several overlap).
* Tokens are split by thresholds: **background** (``c < alpha_c``) is pooled, every 2x2 block to
  one token (kept, not discarded); **small** people (``s < alpha_s``) are replaced by their four
  tokens of the 2x-resolution image; **large** people stay at low resolution.  The three groups
  are concatenated for the main encoder.

hmrflow's choices: a 2x2 block is pooled only when all four of its tokens are background
(mixed blocks keep their background tokens one by one, so a person's edge never shares a token
with the background); every output token carries its area in low-resolution patches (4 for a
pooled block, 1, or 1/4 for a high-resolution token), which is what the project's ViT blocks
take as ``log(size)`` attention bias, and its centre on the low-resolution grid.  The ablations
of the paper are modes: all low resolution, all high resolution, background discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

#: Token kinds in :class:`ScaleAdaptiveTokens.kind`.
BACKGROUND, LARGE, HIGH_RES = 0, 1, 2

Mode = Literal["adaptive", "all_low", "all_high", "discard_background"]


@dataclass
class ScaleAdaptiveTokens:
    """A batch of token sets of different lengths, padded to the longest.

    tokens: (B, M, C); valid: (B, M) bool (False = padding); sizes: (B, M) float, area in
    low-resolution patches (0 on padding); centres: (B, M, 2) float (row, col) on the
    low-resolution grid; kind: (B, M) int64, BACKGROUND / LARGE / HIGH_RES (-1 on padding).
    """

    tokens: torch.Tensor
    valid: torch.Tensor
    sizes: torch.Tensor
    centres: torch.Tensor
    kind: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """(B,) number of real tokens per image."""
        return self.valid.sum(dim=1)


def scale_map_targets(
    boxes_xyxy: np.ndarray,
    depth: np.ndarray,
    image_wh: tuple[int, int],
    grid_hw: tuple[int, int],
    min_cover: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of the scale map for one image.

    boxes_xyxy: (P, 4) person boxes in pixels; depth: (P,) distance to the camera (the nearest
    person wins a patch several cover); image_wh: (W, H); grid_hw: (gh, gw) low-resolution token
    grid over the whole image.  A patch is covered when a box covers at least ``min_cover`` of it.
    Returns conf (gh, gw) float32 in {0, 1} and scale (gh, gw) float32 (0 where uncovered).
    """
    w, h = float(image_wh[0]), float(image_wh[1])
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    conf = np.zeros((gh, gw), np.float32)
    scale = np.zeros((gh, gw), np.float32)
    if len(boxes) == 0:
        return conf, scale
    ph, pw = h / gh, w / gw
    y0 = np.arange(gh)[:, None] * ph
    x0 = np.arange(gw)[None, :] * pw
    best = np.full((gh, gw), np.inf)
    longest = max(w, h)
    for p in np.argsort(np.asarray(depth, np.float64), kind="stable"):
        bx0, by0, bx1, by1 = boxes[p]
        ov_y = np.clip(np.minimum(y0 + ph, by1) - np.maximum(y0, by0), 0, None)
        ov_x = np.clip(np.minimum(x0 + pw, bx1) - np.maximum(x0, bx0), 0, None)
        cover = (ov_y * ov_x) / (ph * pw) >= min_cover
        new = cover & ~np.isfinite(best)  # nearer people were written first
        s = min(float(np.hypot(bx1 - bx0, by1 - by0)) / longest, 1.0)
        conf[new] = 1.0
        scale[new] = s
        best[new] = float(depth[p])
    return conf, scale


def select_tokens(
    low: torch.Tensor,
    high: torch.Tensor,
    conf: torch.Tensor,
    scale: torch.Tensor,
    alpha_c: float = 0.5,
    alpha_s: float = 0.2,
    mode: Mode = "adaptive",
) -> ScaleAdaptiveTokens:
    """Scale-adaptive token sets of a batch (see the module docstring).

    low: (B, gh, gw, C) low-resolution tokens; high: (B, 2gh, 2gw, C) the tokens of the image at
    twice the resolution; conf, scale: (B, gh, gw) the scale map.  gh and gw must be even.
    mode: ``adaptive``; ``all_low`` (every low-resolution token, nothing pooled); ``all_high``
    (every high-resolution token); ``discard_background`` (adaptive without the background).
    """
    b, gh, gw, c = low.shape
    if gh % 2 or gw % 2:
        raise ValueError(f"the low-resolution grid must have even sides for 2x2 pooling, got {gh}x{gw}")
    if high.shape != (b, 2 * gh, 2 * gw, c):
        raise ValueError(f"high-resolution tokens must be {(b, 2 * gh, 2 * gw, c)}, got {tuple(high.shape)}")
    person = conf >= alpha_c
    small = person & (scale < alpha_s)
    if mode == "all_low":
        person, small = torch.ones_like(person), torch.zeros_like(person)
    elif mode == "all_high":
        person, small = torch.ones_like(person), torch.ones_like(person)
    elif mode not in ("adaptive", "discard_background"):
        raise ValueError(f"unknown mode {mode!r}")
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij"
    )
    per_image = []
    for i in range(b):
        toks, sizes, centres, kinds = [], [], [], []
        bg = ~person[i]
        # background: whole 2x2 blocks pooled, the rest one by one
        block_bg = bg.reshape(gh // 2, 2, gw // 2, 2).all(dim=3).all(dim=1)  # (gh/2, gw/2)
        pooled_cell = block_bg.repeat_interleave(2, 0).repeat_interleave(2, 1)
        if mode != "discard_background":
            blocks = low[i].reshape(gh // 2, 2, gw // 2, 2, c).mean(dim=(1, 3))  # (gh/2, gw/2, C)
            toks.append(blocks[block_bg])
            by, bx = torch.nonzero(block_bg, as_tuple=True)
            centres.append(torch.stack([2 * by + 0.5, 2 * bx + 0.5], dim=-1).float())
            sizes.append(torch.full((len(by),), 4.0))
            kinds.append(torch.full((len(by),), BACKGROUND))
            single = bg & ~pooled_cell
            toks.append(low[i][single])
            centres.append(torch.stack([rows[single], cols[single]], dim=-1))
            sizes.append(torch.ones(int(single.sum())))
            kinds.append(torch.full((int(single.sum()),), BACKGROUND))
        large = person[i] & ~small[i]
        toks.append(low[i][large])
        centres.append(torch.stack([rows[large], cols[large]], dim=-1))
        sizes.append(torch.ones(int(large.sum())))
        kinds.append(torch.full((int(large.sum()),), LARGE))
        sy, sx = torch.nonzero(small[i], as_tuple=True)
        if len(sy):
            dy = torch.tensor([0, 0, 1, 1])
            dx = torch.tensor([0, 1, 0, 1])
            hy = (2 * sy[:, None] + dy).reshape(-1)
            hx = (2 * sx[:, None] + dx).reshape(-1)
            toks.append(high[i][hy, hx])
            centres.append(torch.stack([(hy.float() - 0.5) / 2, (hx.float() - 0.5) / 2], dim=-1))
            sizes.append(torch.full((len(hy),), 0.25))
            kinds.append(torch.full((len(hy),), HIGH_RES))
        per_image.append((torch.cat(toks), torch.cat(sizes), torch.cat(centres), torch.cat(kinds).long()))
    m = max(len(t[0]) for t in per_image)
    out = ScaleAdaptiveTokens(
        tokens=low.new_zeros(b, m, c),
        valid=torch.zeros(b, m, dtype=torch.bool),
        sizes=torch.zeros(b, m),
        centres=torch.zeros(b, m, 2),
        kind=torch.full((b, m), -1, dtype=torch.long),
    )
    for i, (t, s, ce, k) in enumerate(per_image):
        n = len(t)
        out.tokens[i, :n], out.valid[i, :n], out.sizes[i, :n], out.centres[i, :n], out.kind[i, :n] = t, True, s, ce, k
    return out
