"""Training pairs for the motion prior from the pipeline's own output on rendered clips.

For every rendered clip (a folder made by ``hmrflow synth``: ``<clip>.mp4`` + ``gt.npz``) the
pipeline's frame stages and tracker run as they do for users (decode -> detect -> estimate
-> track -> sequences, no refinement), and every observed row of every track is paired with
the ground-truth person its detection box covers (per frame, Hungarian assignment on the IoU
of the detection box with the person's visible-pixel box, gate ``iou_gate``).  What the
denoiser then learns is the estimator's and tracker's real error (biases, flips, depth
drift, identity mix-ups), not a hand-made noise model.

Ground truth is put in the estimator's camera: rotations are the true camera-frame ones
(what evaluation compares against); the root's depth is scaled by ``f_est / f_true`` because
the pipeline places people with its own focal length (x and y of a root seen at a given
pixel do not depend on the focal; only the depth does).

One ``.npz`` per clip (:func:`clip_pairs`), rows grouped by track, one row per frame of the
track's span (frames the tracker missed are rows with ``observed`` False, zero estimates and
features, and the ground truth of the person seen on both sides of the hole):
``track_id, frame_idx`` (R,) int64; ``observed`` (R,) bool; ``rotmats`` (R, 24, 3, 3)
float32 estimates; ``transl`` (R, 3); ``confidence`` (R,); ``feature`` (R, FEATURE_DIM)
float16; ``betas`` (R, 10) per-row estimated shape; ``person`` (R,) int64 ground-truth person
index (-1: none); ``gt_rotmats`` (R, 24, 3, 3); ``gt_transl`` (R, 3); ``gt_betas`` (R, 10);
``gt_valid`` (R,) bool (``person >= 0``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.pipeline.atomic import atomic_path
from hmrflow.pipeline.boxes import box_iou, match_iou
from hmrflow.priors.motion_diffusion.representation import ROOT_JOINT

log = logging.getLogger(__name__)


def _on_grid(x: np.ndarray, at: np.ndarray, n: int, dtype: Any) -> np.ndarray:
    """Rows ``x`` (K, ...) placed at positions ``at`` of an (n, ...) array of zeros."""
    g = np.zeros((n,) + x.shape[1:], dtype)
    g[at] = x
    return g


def _gt_arrays(gt_path: Path) -> dict[str, np.ndarray]:
    with np.load(gt_path, allow_pickle=False) as z:
        return {k: z[k] for k in ("poses", "transl", "betas", "boxes", "K", "width", "visible_frac")}


def clip_pairs(built: Any, clip_dir: Path, iou_gate: float = 0.5) -> dict[str, np.ndarray] | None:
    """Run ``built`` (the pipeline's stages, :class:`~hmrflow.pipeline.assembly.BuiltStages`)
    on one rendered clip and pair its track rows with ground truth (see the module doc).

    Returns the arrays of one clip, or None when nothing was tracked.
    """
    import torch

    from hmrflow.jobs.pipelines import probe_clip
    from hmrflow.pipeline.runner import run_frame_part
    from hmrflow.priors.rotations import axis_angle_to_matrix

    clip = probe_clip(str(clip_dir / f"{clip_dir.name}.mp4"), clip_dir.name)
    part = run_frame_part(built.decode, built.frame_stages, clip)
    if part.estimates is None or not len(part.estimates):
        return None
    tracked = built.track(part.estimates)
    gt = _gt_arrays(clip_dir / "gt.npz")
    n_frames = gt["poses"].shape[0]
    # per tracked row: the ground-truth person its box covers (-1: none)
    person = np.full(len(tracked), -1, np.int64)
    for f in np.unique(tracked.frame_idx):
        rows = np.flatnonzero(tracked.frame_idx == f)
        if f >= n_frames:
            continue
        gboxes = gt["boxes"][f]
        ok = np.isfinite(gboxes).all(1) & (gt["visible_frac"][f] > 0)
        if not ok.any():
            continue
        iou = box_iou(tracked.boxes_xyxy[rows].astype(np.float64), gboxes[ok].astype(np.float64))
        cols = np.flatnonzero(ok)
        for r, c in match_iou(iou, gate=iou_gate):
            person[rows[r]] = cols[c]
    seqs = built.to_sequences(tracked)
    # to_sequences keeps one row per (track, frame): find the same rows to carry their person
    key_row = {}
    for i in np.argsort(-tracked.confidence, kind="stable"):
        key_row.setdefault((int(tracked.track_id[i]), int(tracked.frame_idx[i])), int(i))
    w_dec = part.frame_hw[1] if part.frame_hw else int(gt["width"])
    f_true = float(gt["K"][0, 0]) * w_dec / float(gt["width"])  # in decoded pixels, like the estimates' focal
    keys = ("track_id", "frame_idx", "observed", "rotmats", "transl", "confidence", "feature", "betas", "person")
    keys += ("gt_rotmats", "gt_transl", "gt_betas", "gt_valid")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    gt_rot_all = axis_angle_to_matrix(torch.from_numpy(gt["poses"].reshape(-1, 24, 3).astype(np.float32))).numpy()
    gt_rot_all = gt_rot_all.reshape(gt["poses"].shape[0], gt["poses"].shape[1], 24, 3, 3)
    focal = float(np.median(tracked.focal))
    for s in seqs:
        rows = np.array([key_row[(s.track_id, int(f))] for f in s.frame_idx], np.int64)
        grid = np.arange(int(s.frame_idx[0]), int(s.frame_idx[-1]) + 1, dtype=np.int64)
        at = np.searchsorted(grid, s.frame_idx)
        obs = np.zeros(len(grid), bool)
        obs[at] = True
        p = np.full(len(grid), -1, np.int64)
        p[at] = person[rows]
        # a hole's frames belong to the person seen on both sides of it
        prev_p = p[at][np.maximum(np.searchsorted(at, np.arange(len(grid)), side="right") - 1, 0)]
        next_p = p[at][np.minimum(np.searchsorted(at, np.arange(len(grid)), side="left"), len(at) - 1)]
        p = np.where(obs, p, np.where(prev_p == next_p, prev_p, -1))
        valid = p >= 0
        pi = np.where(valid, p, 0)
        fi = np.minimum(grid, n_frames - 1)
        root = gt["transl"][fi, pi] + np.asarray(ROOT_JOINT, np.float32)
        root[:, 2] *= focal / f_true
        n = len(grid)

        out["track_id"].append(np.full(n, s.track_id, np.int64))
        out["frame_idx"].append(grid)
        out["observed"].append(obs)
        out["rotmats"].append(_on_grid(s.rotmats, at, n, np.float32))
        out["transl"].append(_on_grid(s.transl, at, n, np.float32))
        out["confidence"].append(_on_grid(s.confidence, at, n, np.float32))
        out["feature"].append(_on_grid(np.asarray(s.feature), at, n, np.float16))
        out["betas"].append(_on_grid(tracked.betas[rows], at, n, np.float32))
        out["person"].append(p)
        out["gt_rotmats"].append(gt_rot_all[fi, pi].astype(np.float32))
        out["gt_transl"].append((root - np.asarray(ROOT_JOINT, np.float32)).astype(np.float32))
        out["gt_betas"].append(gt["betas"][pi].astype(np.float32))
        out["gt_valid"].append(valid)
    return {k: np.concatenate(v) for k, v in out.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sets", nargs="+", help="folders of rendered clips (each <clip>/<clip>.mp4 + gt.npz)")
    p.add_argument("--out", required=True, help="folder for one pairs .npz per clip")
    p.add_argument("--preset", default="clip")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tag", default="", help="suffix of the output names (e.g. the estimator variant)")


def run(args: argparse.Namespace) -> int:
    """Write ``OUT/<clip><tag>.npz`` for every clip not done yet (resumable)."""
    from tqdm import tqdm

    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config

    cfg = load_config(args.preset, ["refine.enabled=false", *args.overrides])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    built = build_spec(cfg, out / "_unused").build()
    for st in (*built.frame_stages, built.track):
        if hasattr(st, "setup"):
            st.setup()
    clips = sorted(c for s in args.sets for c in Path(s).glob("*/") if (c / "gt.npz").is_file())
    for clip_dir in tqdm(clips, desc="pairs", unit="clip"):
        dest = out / f"{clip_dir.name}{args.tag}.npz"
        if dest.is_file():
            continue
        arrays = clip_pairs(built, clip_dir)
        if arrays is None:
            log.warning("%s: nothing tracked", clip_dir)
            continue
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        log.info("%s: %d rows, %.0f%% matched", dest.name, len(arrays["frame_idx"]), 100 * arrays["gt_valid"].mean())
    return 0
