"""Training pieces of the bundled detector: targets, augmentation, loss, trainer, F1.

Data-agnostic: frames arrive as uint8 images with per-pixel person instance maps (``-1`` =
no person), e.g. from :mod:`hmrflow.jobs.train.synth_frames`; ``hmrflow train detector``
(:mod:`hmrflow.jobs.train.detector`) wires these to the synthetic world.

Targets are built from the instance map *after* augmentation, so boxes are always the
extents of the visible pixels in the network input (edge coordinates, see :mod:`.model`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from hmrflow.pipeline.atomic import atomic_path
from hmrflow.pipeline.boxes import box_iou, match_iou
from hmrflow.pipeline.errors import CheckpointError
from hmrflow.stages.detect.model import PIXEL_MEAN, PIXEL_STD, STRIDE, VOTE_SCALE, DenseDetector, DetectorSpec

log = logging.getLogger(__name__)

#: A person needs this many visible pixels (network input) to be a training positive.
MIN_PIXELS = 12


# ------------------------------------------------------------------ augmentation
def augment(
    images: np.ndarray, instance: np.ndarray, spec: DetectorSpec, gen: torch.Generator, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp frames into the network input with random scale, placement, flip and colour.

    Args:
        images: (B, H, W, 3) uint8; instance: (B, H, W) int person index, -1 = none.
        train: False = plain letterbox (fit, top-left, no flip/colour), as at inference.
    Returns:
        x (B, 3, in_h, in_w) float32 normalised (padding = 0), inst (B, in_h, in_w) int64.
    """
    b, h, w = instance.shape
    ih, iw = spec.input_h, spec.input_w
    base = min(iw / w, ih / h)
    img = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - PIXEL_MEAN) / PIXEL_STD
    inst = torch.from_numpy(instance.astype(np.int64))
    if train:
        s = base * torch.exp(torch.empty(b).uniform_(math.log(0.55), math.log(1.5), generator=gen))
        flip = torch.rand(b, generator=gen) < 0.5
        u = torch.rand(b, 2, generator=gen)
    else:
        s = torch.full((b,), base)
        flip = torch.zeros(b, dtype=torch.bool)
        u = torch.zeros(b, 2)
    # placement of the scaled image's top-left corner in the input (edge coordinates)
    free_x, free_y = iw - w * s, ih - h * s
    tx = torch.where(free_x >= 0, u[:, 0] * free_x, free_x * u[:, 0])
    ty = torch.where(free_y >= 0, u[:, 1] * free_y, free_y * u[:, 1])
    # output edge coord e_out = s * e_img + t  ->  e_img = (e_out - t) / s; normalised grid
    ex = (torch.arange(iw, dtype=torch.float32) + 0.5)[None] - tx[:, None]
    ey = (torch.arange(ih, dtype=torch.float32) + 0.5)[None] - ty[:, None]
    gx = (ex / s[:, None]) / w * 2 - 1
    gx = torch.where(flip[:, None], -gx, gx)
    gy = (ey / s[:, None]) / h * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(b, ih, iw), gy[:, :, None].expand(b, ih, iw)], -1)
    x = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = F.grid_sample((inst + 1).float()[:, None], grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if train:
        gain = torch.exp(torch.empty(b, 1, 1, 1).uniform_(-0.35, 0.35, generator=gen))
        bias = torch.empty(b, 3, 1, 1).uniform_(-0.25, 0.25, generator=gen)
        x = x * gain + bias + torch.randn(x.shape, generator=gen) * 0.03
    return x, lab[:, 0].round().long() - 1


# ----------------------------------------------------------------------- targets
#: Weight of the box terms (size, offset) at the neighbours of a centre cell (centre = 1).
NEIGHBOUR_BOX_WEIGHT = 0.5
_NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def build_targets(
    inst: torch.Tensor, n_people: int, stride: int = STRIDE, min_pixels: int = MIN_PIXELS
) -> dict[str, torch.Tensor]:
    """Dense training targets from instance maps.

    Each person gets one *centre cell*: the cell holding the centre of its visible box, or,
    when a more visible person already holds that cell (two overlapping people whose
    centres fall in one cell), the free neighbour cell nearest to its centre, with the
    offset pointing back to the true centre.  The box terms are also supervised at the
    8 neighbours of a centre cell that the person owns (its Gaussian is the largest there
    and no centre sits there), with offsets pointing to the centre: a heat peak that lands
    one cell off still decodes its person's box.

    Args:
        inst: (B, H, W) int64 person index per pixel, -1 = none (H, W multiples of stride).
        n_people: instance ids are < n_people.
    Returns:
        heat (B,1,h,w) Gaussian centre targets (1 at centre cells); size, offset (B,2,h,w)
        and their weight box_w (B,1,h,w) (1 at centre cells, NEIGHBOUR_BOX_WEIGHT at owned
        neighbours); centre (B,1,h,w) 0/1 centre cells; fg (B,1,h,w) person pixel fraction;
        vote (B,2,h,w) and vote_w (B,1,h,w) (fraction of the cell's majority person).
    """
    b, H, W = inst.shape
    h, w = H // stride, W // stride
    heat = torch.zeros(b, 1, h, w)
    size = torch.zeros(b, 2, h, w)
    offset = torch.zeros(b, 2, h, w)
    centre = torch.zeros(b, 1, h, w)
    box_w = torch.zeros(b, 1, h, w)
    onehot = (inst[:, None] == torch.arange(n_people)[None, :, None, None]).float()  # (B, P, H, W)
    frac = F.avg_pool2d(onehot, stride)  # (B, P, h, w)
    fg = frac.sum(1, keepdim=True).clamp(max=1)
    counts = onehot.sum((2, 3))  # (B, P)
    ys_any = onehot.amax(3)  # (B, P, H)
    xs_any = onehot.amax(2)  # (B, P, W)
    ar_h, ar_w = torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32)
    big = 1e9
    y0 = torch.where(ys_any > 0, ar_h, big).amin(-1)
    y1 = torch.where(ys_any > 0, ar_h, -big).amax(-1) + 1
    x0 = torch.where(xs_any > 0, ar_w, big).amin(-1)
    x1 = torch.where(xs_any > 0, ar_w, -big).amax(-1) + 1
    cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride  # (B, P) in cells
    bw, bh = (x1 - x0) / stride, (y1 - y0) / stride
    valid = counts >= min_pixels
    gy, gx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij"
    )
    for bi in range(b):
        # most visible first: it keeps its own cell when two centres share one
        people = [int(q) for q in torch.argsort(counts[bi], descending=True) if valid[bi, q]]
        gauss: dict[int, torch.Tensor] = {}
        cell: dict[int, tuple[int, int]] = {}
        taken = torch.zeros(h, w, dtype=torch.bool)
        for pi in people:
            pcx, pcy = float(cx[bi, pi]), float(cy[bi, pi])
            sx, sy = max(0.5, float(bw[bi, pi]) / 6), max(0.5, float(bh[bi, pi]) / 6)
            g = torch.exp(-((gx - pcx) ** 2) / (2 * sx * sx) - ((gy - pcy) ** 2) / (2 * sy * sy))
            i = int(min(h - 1, max(0, math.floor(pcy))))
            j = int(min(w - 1, max(0, math.floor(pcx))))
            if taken[i, j]:
                free = [
                    (i + di, j + dj)
                    for di, dj in _NEIGHBOURS
                    if 0 <= i + di < h and 0 <= j + dj < w and not taken[i + di, j + dj]
                ]
                if not free:
                    continue
                i, j = min(free, key=lambda c: (c[0] + 0.5 - pcy) ** 2 + (c[1] + 0.5 - pcx) ** 2)
            g[i, j] = 1.0
            heat[bi, 0] = torch.maximum(heat[bi, 0], g)
            taken[i, j] = True
            gauss[pi], cell[pi] = g, (i, j)
            centre[bi, 0, i, j] = 1.0
        if not cell:
            continue
        order = list(cell)
        g_all = torch.stack([gauss[q] for q in order])  # (P', h, w)
        owner = g_all.argmax(0)
        for k, pi in enumerate(order):
            i, j = cell[pi]
            box = torch.log(torch.stack([bw[bi, pi], bh[bi, pi]]))
            for di, dj in [(0, 0)] + _NEIGHBOURS:
                ii, jj = i + di, j + dj
                if not (0 <= ii < h and 0 <= jj < w):
                    continue
                if (di, dj) != (0, 0) and (taken[ii, jj] or int(owner[ii, jj]) != k):
                    continue
                size[bi, :, ii, jj] = box
                offset[bi, 0, ii, jj] = cx[bi, pi] - (jj + 0.5)
                offset[bi, 1, ii, jj] = cy[bi, pi] - (ii + 0.5)
                box_w[bi, 0, ii, jj] = 1.0 if (di, dj) == (0, 0) else NEIGHBOUR_BOX_WEIGHT
    best_frac, best = frac.max(1)  # (B, h, w)
    bcx = torch.gather(cx, 1, best.reshape(b, -1)).reshape(b, h, w)
    bcy = torch.gather(cy, 1, best.reshape(b, -1)).reshape(b, h, w)
    vote = torch.stack([(bcx - gx) / VOTE_SCALE, (bcy - gy) / VOTE_SCALE], 1)
    vote_w = (best_frac >= 0.25).float()[:, None] * torch.gather(valid.float(), 1, best.reshape(b, -1)).reshape(
        b, 1, h, w
    )
    vote = torch.where(vote_w > 0, vote, torch.zeros_like(vote))
    return {
        "heat": heat,
        "size": size,
        "offset": offset,
        "centre": centre,
        "box_w": box_w,
        "fg": fg,
        "vote": vote,
        "vote_w": vote_w,
    }


def detector_loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal centre loss + weighted L1 box terms (centres and their owned neighbours) + BCE
    foreground + L1 votes; returns (loss, parts).

    The box terms are a weighted mean over the supervised cells (weights ``box_w``).
    """
    p = torch.sigmoid(out["heat"]).clamp(1e-4, 1 - 1e-4)
    pos = tgt["heat"] >= 1.0
    n_pos = pos.sum().clamp_min(1)
    pos_l = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_l = -(torch.log(1 - p) * p**2 * (1 - tgt["heat"]) ** 4)[~pos].sum()
    l_heat = (pos_l + neg_l) / n_pos
    c = tgt["box_w"]
    n_box = c.sum().clamp_min(1)
    l_size = (F.l1_loss(out["size"], tgt["size"], reduction="none") * c).sum() / n_box
    l_off = (F.l1_loss(out["offset"], tgt["offset"], reduction="none") * c).sum() / n_box
    l_fg = F.binary_cross_entropy_with_logits(out["fg"], tgt["fg"])
    vw = tgt["vote_w"]
    l_vote = (F.l1_loss(out["vote"], tgt["vote"], reduction="none") * vw).sum() / vw.sum().clamp_min(1)
    loss = l_heat + l_size + l_off + l_fg + l_vote
    parts = {
        k: float(v.detach())
        for k, v in (("heat", l_heat), ("size", l_size), ("offset", l_off), ("fg", l_fg), ("vote", l_vote))
    }
    return loss, parts


# ------------------------------------------------------------------------ trainer
@dataclass
class TrainState:
    """What a checkpoint holds besides the weights."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)


class DetectorTrainer:
    """AdamW + cosine schedule over ``total_steps``; ``step`` on a batch; ``save``/``load`` resume.

    Args:
        spec: architecture; lr: peak learning rate; total_steps: schedule length.
        seed: seeds initial weights and augmentation.
    """

    def __init__(
        self,
        spec: DetectorSpec,
        lr: float = 2e-3,
        total_steps: int = 1000,
        seed: int = 0,
        device: str = "cpu",
        n_people: int = 8,
    ) -> None:
        torch.manual_seed(seed)
        self.spec = spec
        self.device = torch.device(device)
        self.model = DenseDetector(spec).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
        self.lr = lr
        self.total_steps = max(1, total_steps)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.state = TrainState()
        self.n_people = n_people

    def _lr_at(self, step: int) -> float:
        warm = min(100, self.total_steps // 10)
        if step < warm:
            return self.lr * (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        return self.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    def step(self, images: np.ndarray, instance: np.ndarray) -> dict[str, float]:
        """One optimiser step on a batch: images (B, H, W, 3) uint8, instance (B, H, W) int."""
        self.model.train()
        x, inst = augment(images, instance, self.spec, self.gen, train=True)
        tgt = build_targets(inst, self.n_people, stride=self.spec.stride)
        out = self.model(x.to(self.device))
        loss, parts = detector_loss(out, {k: v.to(self.device) for k, v in tgt.items()})
        for g in self.opt.param_groups:
            g["lr"] = self._lr_at(self.state.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.state.step += 1
        parts["loss"] = float(loss.detach())
        return parts

    def save(self, path: str | Path) -> Path:
        """Atomically write weights, optimiser, generator and progress (loadable weights-only)."""
        blob = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "history": self.state.history,
            "spec": self.spec.to_dict(),
            "total_steps": self.total_steps,
            "lr": self.lr,
        }
        with atomic_path(Path(path)) as tmp:
            torch.save(blob, tmp)
        return Path(path)

    def load(self, path: str | Path) -> None:
        """Resume from :meth:`save`'s file (same spec required)."""
        p = Path(path)
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file: name it
            raise CheckpointError(f"{p}: cannot read training checkpoint ({type(exc).__name__}: {exc})") from None
        if DetectorSpec.from_dict(blob["spec"]) != self.spec:
            raise CheckpointError(f"{p}: checkpoint architecture {blob['spec']} differs from {self.spec.to_dict()}")
        self.model.load_state_dict(blob["model"])
        self.opt.load_state_dict(blob["opt"])
        self.gen.set_state(blob["gen"])
        torch.set_rng_state(blob["torch_rng"])
        self.state = TrainState(int(blob["epoch"]), int(blob["step"]), list(blob["history"]))


# ---------------------------------------------------------------------- scoring
def match_frame(
    pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(tp, fp, fn) of one frame: one-to-one max-IoU matching to counted people first, then
    left-over predictions that match a don't-care person are ignored (neither tp nor fp).

    pred: (N, 4) boxes; gt: (M, 4) boxes (NaN rows = absent); counted: (M,) bool.
    """
    ok = np.isfinite(gt).all(1)
    gt, counted = gt[ok], counted[ok]
    n, m = len(pred), len(gt)
    if n == 0 or m == 0:
        return 0, n, int(counted.sum())
    iou = box_iou(pred, gt)
    matched = np.zeros(n, bool)
    cols = np.nonzero(counted)[0]
    pairs = match_iou(iou[:, cols], iou_threshold)
    tp = len(pairs)
    matched[[r for r, _ in pairs]] = True
    dc = np.nonzero(~counted)[0]
    free = np.nonzero(~matched)[0]
    ignored = len(match_iou(iou[np.ix_(free, dc)], iou_threshold)) if len(dc) and len(free) else 0
    fp = n - tp - ignored
    fn = int(counted.sum()) - tp
    return tp, fp, fn


def detection_f1(
    pred_boxes: Sequence[np.ndarray],
    gt_boxes: np.ndarray,
    visible_frac: np.ndarray,
    min_visible: float = 0.3,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Detection precision/recall/F1 over frames (people less than ``min_visible`` visible are don't-care).

    pred_boxes: per frame (N_f, 4); gt_boxes: (F, P, 4) NaN-padded; visible_frac: (F, P).
    """
    tp = fp = fn = 0
    for f, pb in enumerate(pred_boxes):
        a, b, c = match_frame(np.asarray(pb).reshape(-1, 4), gt_boxes[f], visible_frac[f] >= min_visible, iou_threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"f1": f1, "precision": prec, "recall": rec, "tp": tp, "fp": fp, "fn": fn, "frames": len(pred_boxes)}


def overlapping_people(gt: np.ndarray, counted: np.ndarray, overlap_iou: float = 0.3) -> np.ndarray:
    """Which counted people of one frame overlap another counted person.

    Args:
        gt: (M, 4) xyxy boxes of one frame (NaN rows = absent).
        counted: (M,) bool, the people that count (e.g. ``visible_frac >= 0.3``).
        overlap_iou: a person overlaps when its box has IoU >= this with another counted box.
    Returns:
        (M,) bool.
    """
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    ok = np.isfinite(gt).all(1) & np.asarray(counted, bool)
    iou = box_iou(gt, gt) * (ok[:, None] & ok[None, :])  # NaN boxes already give IoU 0
    np.fill_diagonal(iou, 0.0)
    return (iou >= overlap_iou).any(1)


def overlap_detection_scores(
    pred_boxes: Sequence[np.ndarray],
    gt_boxes: np.ndarray,
    visible_frac: np.ndarray,
    min_visible: float = 0.3,
    overlap_iou: float = 0.3,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Detection scores with the figures for overlapping people beside the overall ones.

    Definitions (per frame):

    * *counted* people have ``visible_frac >= min_visible``; others are don't-care, exactly as
      in :func:`detection_f1` (whose precision/recall/F1/tp/fp/fn are included unchanged);
    * an *overlapping person* is a counted person whose ground-truth box has IoU >=
      ``overlap_iou`` with the box of another counted person in the same frame;
    * predictions are matched one-to-one to all counted people at IoU >= ``iou_threshold``
      (:func:`hmrflow.pipeline.boxes.match_iou`, the same matching as :func:`match_frame`);
      ``overlap_recall`` = matched overlapping people / overlapping people;
    * a *covering box* is one prediction with IoU >= ``iou_threshold`` with two or more
      counted people (``covering_boxes``; ``covering_frames`` counts frames holding one);
      a tight box of one of two heavily overlapping people can be one, so
    * a *merged box* is a covering box one of whose covered people is left unmatched (the
      one box stands for both; ``merged_boxes``, ``merged_frames``).

    Args:
        pred_boxes: per frame (N_f, 4) xyxy boxes.
        gt_boxes: (F, P, 4) NaN-padded xyxy; visible_frac: (F, P).
    Returns:
        the keys of :func:`detection_f1` plus ``overlap_people``, ``overlap_tp``,
        ``overlap_recall`` (NaN when no person overlaps), ``covering_boxes``,
        ``covering_frames``, ``merged_boxes``, ``merged_frames``.
    """
    out: dict[str, float] = dict(detection_f1(pred_boxes, gt_boxes, visible_frac, min_visible, iou_threshold))
    n_ov = tp_ov = covering_boxes = covering_frames = merged_boxes = merged_frames = 0
    for f, pb in enumerate(pred_boxes):
        pred = np.asarray(pb, np.float64).reshape(-1, 4)
        gt = np.asarray(gt_boxes[f], np.float64)
        counted = (np.asarray(visible_frac[f]) >= min_visible) & np.isfinite(gt).all(1)
        ov = overlapping_people(gt, counted, overlap_iou)
        n_ov += int(ov.sum())
        cols = np.nonzero(counted)[0]
        if len(pred) == 0 or len(cols) == 0:
            continue
        iou = box_iou(pred, gt[cols])  # (N, C)
        pairs = match_iou(iou, iou_threshold)
        tp_ov += int(sum(ov[cols[c]] for _, c in pairs))
        covered = iou >= iou_threshold  # (N, C)
        unmatched = np.ones(len(cols), bool)
        unmatched[[c for _, c in pairs]] = False
        covering = covered.sum(1) >= 2
        merged = covering & (covered & unmatched[None]).any(1)
        covering_boxes += int(covering.sum())
        covering_frames += int(covering.any())
        merged_boxes += int(merged.sum())
        merged_frames += int(merged.any())
    out.update(
        {
            "overlap_people": n_ov,
            "overlap_tp": tp_ov,
            "overlap_recall": tp_ov / n_ov if n_ov else float("nan"),
            "covering_boxes": covering_boxes,
            "covering_frames": covering_frames,
            "merged_boxes": merged_boxes,
            "merged_frames": merged_frames,
        }
    )
    return out


def train_loop(
    trainer: DetectorTrainer,
    images: np.ndarray,
    instance: np.ndarray,
    epochs: int,
    batch_size: int,
    checkpoint: str | Path,
    validate: Callable[[DenseDetector], dict[str, Any]] | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Epochs over ``(images (N,H,W,3) uint8, instance (N,H,W))``; checkpoint + validation after each.

    Continues from ``trainer.state`` (call ``trainer.load`` first to resume); the shuffle of
    epoch ``e`` depends only on ``e``, so a resumed run sees the same batches.
    """
    from tqdm.auto import tqdm

    n = len(images)
    per_epoch = n // batch_size
    while trainer.state.epoch < epochs:
        e = trainer.state.epoch
        order = np.random.default_rng([e, 7]).permutation(n)
        epoch_start = int(trainer.state.history[-1]["step"]) if trainer.state.history else 0
        done_in_epoch = trainer.state.step - epoch_start
        sums: dict[str, float] = {}
        bar = tqdm(
            range(max(0, done_in_epoch), per_epoch), desc=f"epoch {e + 1}/{epochs}", disable=not progress, leave=False
        )
        k = 0
        for bi in bar:
            idx = np.sort(order[bi * batch_size : (bi + 1) * batch_size])
            parts = trainer.step(images[idx], instance[idx])
            for key, v in parts.items():
                sums[key] = sums.get(key, 0.0) + v
            k += 1
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            if max_steps is not None and trainer.state.step >= max_steps:
                trainer.save(checkpoint)
                return trainer.state
        record: dict[str, Any] = {"epoch": e + 1, "step": trainer.state.step}
        record.update({f"train_{key}": v / max(k, 1) for key, v in sums.items()})
        if validate is not None:
            record.update(validate(trainer.model))
        trainer.state.epoch = e + 1
        trainer.state.history.append(record)
        trainer.save(checkpoint)
        log.info("epoch %d: %s", e + 1, {k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in record.items()})
    return trainer.state
