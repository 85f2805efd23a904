"""Per-frame accuracy of the estimate stage on the held-out synthetic benchmark sets.

For each set of ``configs/bench`` (easy, crowded, occlusion, far; scene seeds 1000-4999, never
used to train the estimator, whose crops come from ``default_rng([0, i])`` streams of their own)
the first ``clips`` clips are sampled exactly as ``hmrflow synth --bench`` samples them, but only
every ``frame_step``-th frame is rendered (with the person instance map, so the boxes of the
visible pixels are exact).  People are given to :class:`~hmrflow.stages.mesh.stage.EstimateStage`
either as their ground-truth boxes (**oracle detection**) or, with ``--detector``, as the boxes
of the bundled detector matched to the ground truth by IoU >= 0.5 (unmatched people count as
misses).  The stage is given the clip's focal length (known intrinsics; ``--default-focal``
uses HMR2's default instead), which turns the predicted ray-frame orientation into the camera
frame (:func:`~hmrflow.stages.mesh.stage.ray_rotation`).  Every person-frame then gets MPJPE (pelvis-aligned) and PA-MPJPE in mm over the 24
SMPL joints, both from the same body model.

Counted: people with a visible box and at least ``min_visible`` of their body unoccluded;
figures are also given for the people at least 15 % of the frame height (box of the visible
pixels).  Run: ``hmrflow bench estimator-accuracy --sets easy far --clips 2 --out r.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.pipeline.boxes import box_iou, match_iou

log = logging.getLogger(__name__)

SETS = ("easy", "crowded", "occlusion", "far")


def _gt_box_masks(instance: np.ndarray, fi: np.ndarray, pi: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Exact person masks from the instance map: instance (F, H, W) int8, rows (frame ``fi``,
    person ``pi``) with boxes (R, 4) -> (R, MASK_RES, MASK_RES) bool resampled inside the boxes."""
    import torch

    from hmrflow.pipeline.types import MASK_RES
    from hmrflow.stages.detect.maskrcnn_adapter import masks_in_boxes

    if len(fi) == 0:
        return np.zeros((0, MASK_RES, MASK_RES), bool)
    full = torch.from_numpy(instance[fi] == pi[:, None, None].astype(instance.dtype))
    return masks_in_boxes(full.float(), torch.from_numpy(boxes.astype(np.float32))).numpy()


def evaluate_set(
    name: str,
    stage: Any,
    clips: int = 2,
    frame_step: int = 10,
    min_visible: float = 0.3,
    detector: Any = None,
    known_focal: bool = True,
) -> dict[str, Any]:
    """Per-person-frame errors of ``stage`` on the first ``clips`` clips of bench set ``name``.

    ``stage`` is one EstimateStage or a mapping ``{variant name: stage}``: every variant sees
    the same rendered frames, boxes and person masks (exact masks from the instance map with
    ground-truth boxes; the detector's masks with ``detector``), so their figures compare
    person-frame by person-frame.  Returns summary figures and the per-row arrays
    (``pa_mpjpe_mm``, ``mpjpe_mm``, ``height_frac``, ``visible_frac``) of the first variant,
    and, for a mapping, ``variants``: ``{name: {"all": ..., "height_ge_15pct": ..., "pa_mpjpe_mm": array, ...}}``.
    """
    import torch

    from hmrflow.jobs.synth.bench_sets import load_bench_set
    from hmrflow.jobs.synth.clip import load_body_assets, place_people
    from hmrflow.jobs.synth.scene import sample_scene
    from hmrflow.jobs.train.synth_frames import render_scene_frames
    from hmrflow.pipeline.results import DetectedFrames
    from hmrflow.pipeline.types import Detections, FrameBatch
    from hmrflow.priors.metrics import mpjpe, pa_mpjpe

    stages = dict(stage) if isinstance(stage, dict) else {"default": stage}
    body = load_body_assets("synthetic")
    rows: dict[str, dict[str, list[np.ndarray]]] = {v: {"pa": [], "mp": []} for v in stages}
    hf_rows: list[np.ndarray] = []
    vf_rows: list[np.ndarray] = []
    n_gt = n_matched = 0
    for spec in load_bench_set(name, n_clips=clips):
        frames = np.arange(0, spec.n_frames, frame_step)
        fr = render_scene_frames(spec, frames, body)
        scene = sample_scene(spec)
        gt = place_people(scene, body)
        p = gt.betas.shape[0]
        if p == 0:
            continue
        poses = torch.from_numpy(gt.poses[frames].reshape(-1, 72)).float()
        with torch.no_grad():
            gt_j = body.model.forward_axis_angle(
                poses,
                torch.from_numpy(gt.betas).repeat(len(frames), 1),
                torch.from_numpy(gt.transl[frames].reshape(-1, 3)),
            ).joints.numpy()
        gt_j = gt_j.reshape(len(frames), p, 24, 3)
        boxes = fr.boxes[:, :p]
        vis = fr.visible_frac[:, :p]
        keep = np.isfinite(boxes).all(-1) & (vis >= min_visible)  # (F, P)
        fb = FrameBatch(video_id=spec.name, frame_idx=frames.astype(np.int64), pts=frames / spec.fps, images=fr.images)
        if detector is None:
            fi, pi = np.nonzero(keep)
            det_boxes = boxes[fi, pi]
            det_masks = _gt_box_masks(fr.instance, fi, pi, det_boxes)
        else:
            found = detector(fb).detections
            fi_l, pi_l, db, dm = [], [], [], []
            for k, f in enumerate(frames):
                sel = np.nonzero(found.frame_idx == f)[0]
                g = np.nonzero(keep[k])[0]
                for a, b in match_iou(box_iou(found.boxes_xyxy[sel], boxes[k, g]), 0.5):
                    fi_l.append(k)
                    pi_l.append(g[b])
                    db.append(found.boxes_xyxy[sel[a]])
                    dm.append(found.masks[sel[a]])
            fi, pi = np.array(fi_l, np.int64), np.array(pi_l, np.int64)
            det_boxes = np.array(db, np.float32).reshape(-1, 4)
            det_masks = np.array(dm, bool).reshape(len(fi), *found.masks.shape[1:])
        n_gt += int(keep.sum())
        n_matched += len(fi)
        if len(fi) == 0:
            continue
        det = Detections(
            video_id=spec.name,
            frame_idx=frames[fi].astype(np.int64),
            pts=frames[fi] / spec.fps,
            boxes_xyxy=det_boxes.astype(np.float32),
            scores=np.ones(len(fi), np.float32),
            masks=det_masks,
        )
        g = gt_j[fi, pi]
        for vname, st in stages.items():
            est = st.estimate(DetectedFrames(fb, det), float(scene.K[0, 0]) if known_focal else None)
            with torch.no_grad():
                pj = body.model(torch.from_numpy(est.rotmats), torch.from_numpy(est.betas)).joints.numpy()
            rows[vname]["pa"].append(pa_mpjpe(pj, g))  # mm
            rows[vname]["mp"].append(mpjpe(pj, g))
        hf_rows.append((boxes[fi, pi, 3] - boxes[fi, pi, 1]) / spec.height)
        vf_rows.append(vis[fi, pi])
    hf, vf = (np.concatenate(r) if r else np.zeros(0) for r in (hf_rows, vf_rows))

    def summary(pa: np.ndarray, mp: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        if not mask.any():
            return {"n": 0}
        return {
            "n": int(mask.sum()),
            "pa_mpjpe_mm": float(pa[mask].mean()),
            "mpjpe_mm": float(mp[mask].mean()),
            "pa_mpjpe_median_mm": float(np.median(pa[mask])),
            "mpjpe_median_mm": float(np.median(mp[mask])),
        }

    variants = {}
    for vname in stages:
        pa, mp = (np.concatenate(rows[vname][k]) if rows[vname][k] else np.zeros(0) for k in ("pa", "mp"))
        variants[vname] = {
            "all": summary(pa, mp, np.ones(len(pa), bool)),
            "height_ge_15pct": summary(pa, mp, hf >= 0.15),
            "pa_mpjpe_mm": pa,
            "mpjpe_mm": mp,
        }
    first = variants[next(iter(stages))]
    out = {
        "set": name,
        "clips": clips,
        "frame_step": frame_step,
        "min_visible": min_visible,
        "detection": "oracle (ground-truth boxes and masks of the visible pixels)"
        if detector is None
        else "bundled detector (its boxes and masks), IoU>=0.5",
        "focal": "known (the clip's intrinsics)" if known_focal else "HMR2 default 5000/256*max(W,H)",
        "people_frames": n_gt,
        "estimated": n_matched,
        "all": first["all"],
        "height_ge_15pct": first["height_ge_15pct"],
        "pa_mpjpe_mm": first["pa_mpjpe_mm"],
        "mpjpe_mm": first["mpjpe_mm"],
        "height_frac": hf,
        "visible_frac": vf,
    }
    if isinstance(stage, dict):
        out["variants"] = variants
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--frame-step", type=int, default=10)
    p.add_argument("--min-visible", type=float, default=0.3)
    p.add_argument("--weights", default=None, help="estimator weights (default: bundled)")
    p.add_argument("--detector", action="store_true", help="use the bundled detector instead of GT boxes")
    p.add_argument("--default-focal", action="store_true", help="do not give the stage the clip's focal length")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    import torch

    from hmrflow.pipeline.config import DetectConfig, EstimateConfig
    from hmrflow.stages.mesh.stage import EstimateStage

    torch.set_num_threads(args.threads)
    stage = EstimateStage(EstimateConfig(weights=args.weights))
    stage.setup()
    detector = None
    if args.detector:
        from hmrflow.stages.detect.stage import DetectStage

        detector = DetectStage(DetectConfig())
        detector.setup()
    results = {}
    for name in args.sets:
        t0 = time.time()
        r = evaluate_set(name, stage, args.clips, args.frame_step, args.min_visible, detector, not args.default_focal)
        results[name] = {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
        log.info("%s (%.0f s): %s", name, time.time() - t0, json.dumps(results[name]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0
