"""Held-out scores of a one-stage model on rendered frames: detection and body error.

Per family of :mod:`~hmrflow.jobs.train.onestage_data` (frames from seeds the training never
used): detection precision / recall / F1 (box IoU >= 0.5, people under 30 % visible are
don't-care), recall of people who overlap another (box IoU >= 0.3), and MPJPE / PA-MPJPE (mm,
24 joints, pelvis-aligned) of the detected people, each matched to the person its box fits best.
The frames' true focal length is given to the model, as a calibrated camera would.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from hmrflow.jobs.train.onestage_data import PeopleFrames
from hmrflow.pipeline.boxes import box_iou, match_iou

log = logging.getLogger(__name__)

#: family -> seed of the held-out frames (training uses seeds 1 and 2).
VAL_SEEDS = {"mixed": 91001, "overlap": 91002, "far": 91003}


def preset_detect() -> Any:
    """The ``onestage`` preset's detect settings (score threshold, NMS), which scoring uses."""
    from hmrflow.pipeline.config import load_config

    return load_config("onestage").detect


def score_frames(model: Any, frames: PeopleFrames, body_model: Any, mode: str = "adaptive") -> dict[str, float]:
    """Detection and body scores of ``model`` on ``frames`` (see the module docstring), at the
    ``onestage`` preset's score threshold and NMS."""
    from hmrflow.priors.metrics import mpjpe, pa_mpjpe
    from hmrflow.priors.rotations import matrix_to_axis_angle
    from hmrflow.stages.detect.train import overlap_detection_scores
    from hmrflow.stages.onestage.stage import run_onestage

    cfg = preset_detect()
    preds: list[dict[str, np.ndarray]] = []
    for i in range(len(frames)):  # one focal per call: every frame has its scene's camera
        f = float(frames.K[i, 0, 0])
        preds += run_onestage(model, frames.images[i : i + 1], f, body_model, cfg.score_threshold, cfg.nms_iou, mode)
    det = overlap_detection_scores([p["boxes"] for p in preds], frames.boxes, frames.visible_frac)
    errs, pa = [], []
    for i, p in enumerate(preds):
        gt_ok = np.nonzero(frames.present[i] & (frames.visible_frac[i] >= 0.3))[0]
        if not len(gt_ok) or not len(p["boxes"]):
            continue
        pairs = match_iou(box_iou(p["boxes"], frames.boxes[i, gt_ok]), 0.5)
        if not pairs:
            continue
        qi = np.array([a for a, _ in pairs])
        gi = gt_ok[[b for _, b in pairs]]
        aa = matrix_to_axis_angle(torch.from_numpy(p["rotmats"][qi])).reshape(len(qi), 72)
        with torch.no_grad():
            joints = body_model.forward_axis_angle(
                aa, torch.from_numpy(p["betas"][qi]), torch.from_numpy(p["transl"][qi])
            ).joints
        gt = torch.from_numpy(frames.joints[i, gi])
        errs.append(np.asarray(mpjpe(joints, gt)).reshape(-1))
        pa.append(np.asarray(pa_mpjpe(joints, gt)).reshape(-1))
    e = np.concatenate(errs) if errs else np.zeros(0)  # mm already
    pe = np.concatenate(pa) if pa else np.zeros(0)
    return {
        "frames": len(frames),
        "f1": float(det["f1"]),
        "precision": float(det["precision"]),
        "recall": float(det["recall"]),
        "recall_overlap": float(det.get("overlap_recall", float("nan"))),
        "overlap_people": int(det.get("overlap_people", 0)),
        "matched_people": int(len(e)),
        "mpjpe_mm": float(e.mean()) if len(e) else float("nan"),
        "pa_mpjpe_mm": float(pe.mean()) if len(pe) else float("nan"),
    }


def threshold_sweep(
    model: Any,
    frames: PeopleFrames,
    body_model: Any,
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75),
    nms_ious: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7),
) -> dict[tuple[float, float], float]:
    """Detection F1 of ``model`` on ``frames`` for each (score threshold, NMS IoU): one pass of the
    network without NMS, then NMS and the threshold applied to its boxes."""
    from hmrflow.pipeline.boxes import nms
    from hmrflow.stages.detect.train import detection_f1
    from hmrflow.stages.onestage.stage import run_onestage

    low = min(thresholds)
    preds = [
        run_onestage(model, frames.images[i : i + 1], float(frames.K[i, 0, 0]), body_model, low, 1.0)[0]
        for i in range(len(frames))
    ]
    out = {}
    for iou in nms_ious:
        kept = []
        for p in preds:
            keep = (
                nms(torch.from_numpy(p["boxes"]), torch.from_numpy(p["scores"]), iou).numpy() if len(p["boxes"]) else []
            )
            kept.append((p["boxes"][keep], p["scores"][keep]))
        for t in thresholds:
            boxes = [b[s >= t] for b, s in kept]
            out[(t, iou)] = float(detection_f1(boxes, frames.boxes, frames.visible_frac)["f1"])
    return out
