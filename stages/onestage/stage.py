"""The one-stage path as frame stages: ``FrameBatch -> DetectedFrames (with estimates)``.

``detect.kind: onestage`` (or ``--preset onestage``) puts :class:`OneStageStage` where the
detector was and :class:`OneStageEstimates` where the crop estimator was; the camera observer
between them is unchanged.  The first runs the whole-frame network once per frame and fills
both the detections (boxes, scores, box masks, appearance) and the estimates table the crop
estimator would have given (rotations, shape, camera translation with the same focal-length
rule, confidence), so tracking, refinement and writing are the same code for both paths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from hmrflow.pipeline.boxes import nms
from hmrflow.pipeline.config import DetectConfig, EstimateConfig
from hmrflow.pipeline.devices import resolve_device
from hmrflow.pipeline.results import DetectedFrames
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import MASK_RES, Detections, FrameBatch, MeshEstimates
from hmrflow.stages.detect.stage import log_notes_once, touches_border
from hmrflow.stages.mesh.accel.flops import onestage_flops
from hmrflow.stages.mesh.camera import focal_by_rule
from hmrflow.stages.onestage.losses import cxcywh_to_xyxy, pelvis_camera
from hmrflow.stages.onestage.model import OneStageEstimator, high_res_token_count
from hmrflow.stages.onestage.weights import bundled_weights_path, letterbox_frames, load_onestage
from hmrflow.stages.track.appearance import describe

log = logging.getLogger(__name__)

#: The one network does the work of detect and estimate, which together ask for one GPU.
GPU_SHARE = 1.0


def onestage_weights_path(cfg: DetectConfig) -> Path:
    """The weights file ``detect.onestage_weights`` names, or the bundled one."""
    return Path(cfg.onestage_weights).expanduser() if cfg.onestage_weights else bundled_weights_path()


def frame_focal(cfg: EstimateConfig, width: int, height: int) -> float:
    """Focal length (pixels) of a frame: ``estimate.focal_px`` or the ``estimate.focal_default`` rule
    (the crop estimator's rule, so both paths put people at the same depth for the same image)."""
    if cfg.focal_px is not None:
        return float(cfg.focal_px)
    return float(focal_by_rule(cfg.focal_default, (float(width), float(height))))


@torch.no_grad()
def run_onestage(
    model: OneStageEstimator,
    images: np.ndarray,
    focal_px: float,
    body_model: Any,
    score_threshold: float = 0.5,
    nms_iou: float = 0.7,
    mode: str = "adaptive",
    device: torch.device | str = "cpu",
) -> list[dict[str, np.ndarray]]:
    """People in (B, H, W, 3) uint8 frames of one size, one dict per frame.

    Each dict: ``boxes`` (P, 4) xyxy frame pixels, ``scores`` (P,), ``rotmats`` (P, 24, 3, 3)
    camera frame, ``betas`` (P, 10), ``transl`` (P, 3) SMPL translation in the camera frame of
    ``focal_px`` (principal point at the image centre), ``tokens`` and ``high_tokens`` (scalars):
    the main encoder's token count and how many of them are high-resolution.
    """
    b, h, w, _ = images.shape
    x, s = letterbox_frames(images, model.spec)
    th, tw = model.spec.high_size
    out = model(x.to(device), mode=mode)  # type: ignore[arg-type]
    f_in = focal_px * s
    K = torch.tensor([[f_in, 0.0, w * s / 2], [0.0, f_in, h * s / 2], [0.0, 0.0, 1.0]])
    counts = out.tokens.counts.cpu()
    # high-resolution tokens the shallow encoder ran on (all of them in the all_high ablation)
    high = high_res_token_count(out.tokens).cpu()
    results = []
    for i in range(b):
        score = torch.sigmoid(out.logits[i].float()).cpu()
        keep = torch.nonzero(score >= score_threshold).flatten()
        boxes = cxcywh_to_xyxy(out.boxes[i, keep].float().cpu()) * torch.tensor([tw, th, tw, th]) / s
        boxes[:, 0::2] = boxes[:, 0::2].clamp(-0.5, w - 0.5)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(-0.5, h - 0.5)
        if len(keep):
            order = nms(boxes, score[keep], nms_iou)
            keep, boxes = keep[order], boxes[order]
        rot = out.rotmats[i, keep].float().cpu()
        betas = out.betas[i, keep].float().cpu()
        pelvis = pelvis_camera(
            out.root_uv[i, keep].float().cpu(),
            out.log_depth[i, keep].float().cpu(),
            K.expand(len(keep), 3, 3),
            (tw, th),
        )
        j0 = body_model.rest_joints(betas)[:, 0] if len(keep) else torch.zeros(0, 3)
        results.append(
            {
                "boxes": boxes.numpy().astype(np.float32),
                "scores": score[keep].numpy().astype(np.float32),
                "rotmats": rot.numpy().astype(np.float32),
                "betas": betas.numpy().astype(np.float32),
                "transl": (pelvis - j0).numpy().astype(np.float32),
                "tokens": np.int64(counts[i]),
                "high_tokens": np.int64(high[i]),
            }
        )
    return results


class OneStageStage(BaseStage[FrameBatch, DetectedFrames]):
    """Stage: ``FrameBatch -> DetectedFrames`` whose ``estimates`` are already filled."""

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=GPU_SHARE)

    def __init__(self, cfg: DetectConfig, estimate_cfg: EstimateConfig, body_model_cfg: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.estimate_cfg = estimate_cfg
        self.body_model_cfg = body_model_cfg
        self.model: Optional[OneStageEstimator] = None
        self._body: Any = None
        #: Running totals over every frame this stage saw: frames, main-encoder tokens,
        #: high-resolution tokens and FLOPs (read by ``hmrflow bench pipeline``).
        self.stats: dict[str, float] = {"frames": 0, "tokens": 0, "high_tokens": 0, "flops": 0}

    def setup(self) -> None:
        """Load the weights and the body model; resolve the device."""
        from hmrflow.priors.body_model import load_body_model

        log_notes_once(self.cfg)
        self.device = resolve_device(self.cfg.device, "detect.device")
        self.model = load_onestage(onestage_weights_path(self.cfg), self.device)
        bm = self.body_model_cfg
        self._body = load_body_model(
            kind=getattr(bm, "kind", "synthetic"),
            path=getattr(bm, "path", None),
            gender=getattr(bm, "gender", "neutral"),
            device="cpu",
        )
        super().setup()

    def __call__(self, frames: FrameBatch) -> DetectedFrames:
        self.ensure_setup()
        assert self.model is not None
        n = len(frames)
        per_frame: list[dict[str, np.ndarray]] = []
        if n:
            h, w = frames.images.shape[1:3]
            focal = frame_focal(self.estimate_cfg, w, h)
            for s in range(0, n, self.cfg.batch_size):
                per_frame += run_onestage(
                    self.model,
                    frames.images[s : s + self.cfg.batch_size],
                    focal,
                    self._body,
                    self.cfg.score_threshold,
                    self.cfg.nms_iou,
                    self.cfg.onestage_tokens,
                    self.device,
                )
        for r in per_frame:
            self.stats["frames"] += 1
            self.stats["tokens"] += int(r["tokens"])
            self.stats["high_tokens"] += int(r["high_tokens"])
            self.stats["flops"] += onestage_flops(self.model.spec, int(r["high_tokens"]), int(r["tokens"]))
        det, est = to_tables(frames, per_frame, focal if n else 0.0)
        return DetectedFrames(frames=frames, detections=det, estimates=est)


def to_tables(
    frames: FrameBatch, per_frame: list[dict[str, np.ndarray]], focal: float
) -> tuple[Detections, MeshEstimates]:
    """Stack per-frame results into the detections and the estimates tables (same rows)."""
    if not per_frame or not sum(len(r["scores"]) for r in per_frame):
        return Detections.empty(frames.video_id), MeshEstimates.empty(frames.video_id)
    index = np.concatenate([np.full(len(r["scores"]), f, np.int64) for f, r in enumerate(per_frame)])
    cat = {k: np.concatenate([r[k] for r in per_frame]) for k in ("boxes", "scores", "rotmats", "betas", "transl")}
    boxes = cat["boxes"].astype(np.float32)
    masks = np.ones((len(index), MASK_RES, MASK_RES), bool)
    h, w = frames.images.shape[1:3]
    appearance = describe(frames.images, index, boxes, masks)
    border = touches_border(boxes, w, h)
    frame_idx = np.asarray(frames.frame_idx, np.int64)[index]
    pts = np.asarray(frames.pts, np.float64)[index]
    scores = np.clip(cat["scores"], 0, 1).astype(np.float32)
    det = Detections(
        video_id=frames.video_id,
        frame_idx=frame_idx,
        pts=pts,
        boxes_xyxy=boxes,
        scores=scores,
        masks=masks,
        appearance=appearance,
        at_border=border,
    )
    est = MeshEstimates(
        video_id=frames.video_id,
        frame_idx=frame_idx,
        pts=pts,
        boxes_xyxy=boxes,
        scores=scores,
        rotmats=cat["rotmats"],
        betas=cat["betas"],
        cam_t=cat["transl"],
        focal=np.full(len(index), focal, np.float32),
        confidence=scores,
        appearance=appearance,
        at_border=border,
    )
    return det, est


class OneStageEstimates(BaseStage[DetectedFrames, MeshEstimates]):
    """Stage: the estimates :class:`OneStageStage` made, passed on (the crop estimator's place)."""

    resources: ClassVar[Resources] = Resources(cpus=0.1)

    def __call__(self, x: DetectedFrames) -> MeshEstimates:
        if x.estimates is None:
            raise ValueError("the one-stage estimates stage needs the one-stage detect stage before it")
        return x.estimates
