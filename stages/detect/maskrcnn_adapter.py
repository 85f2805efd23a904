"""torchvision Mask R-CNN as a detector (optional: needs torchvision and a weights file).

hmrflow never downloads weights: put torchvision's ``maskrcnn_resnet50_fpn`` (v1) or
``maskrcnn_resnet50_fpn_v2`` COCO state dict in a file and set ``detect.weights=FILE``.
Only the ``person`` class (COCO label 1) is kept; each instance mask (full image,
probabilities) is thresholded at 0.5 and resampled into its box at ``MASK_RES``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from hmrflow.pipeline.config import DetectConfig
from hmrflow.pipeline.errors import CheckpointError, HmrflowError
from hmrflow.pipeline.types import MASK_RES, FrameBatch
from hmrflow.stages.detect.decode_boxes import FrameDetections

log = logging.getLogger(__name__)

PERSON_LABEL = 1  # COCO category id of "person" in torchvision's detection models
#: builder name -> how to recognise its state dict (v2 has a box head with conv layers)
BUILDERS = {
    "maskrcnn_resnet50_fpn_v2": "roi_heads.box_head.0.0.weight",
    "maskrcnn_resnet50_fpn": "roi_heads.box_head.fc6.weight",
}


def _import_torchvision():
    try:
        return importlib.import_module("torchvision")
    except ImportError as exc:
        raise HmrflowError(
            f"detect.kind=maskrcnn needs torchvision, which is not importable ({exc}); install the torchvision "
            "build matching your torch, or use detect.kind=bundled or file"
        ) from None


def masks_in_boxes(masks: torch.Tensor, boxes: torch.Tensor, res: int = MASK_RES) -> torch.Tensor:
    """Full-image masks (N, H, W) float -> (N, res, res) bool resampled inside xyxy boxes (N, 4)
    (pixel-centre convention: sample at the centres of a res x res grid over each box)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, res, res, dtype=torch.bool)
    t = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    ex = (boxes[:, 0, None] + 0.5) + t[None] * (boxes[:, 2] - boxes[:, 0])[:, None]  # edge coordinates
    ey = (boxes[:, 1, None] + 0.5) + t[None] * (boxes[:, 3] - boxes[:, 1])[:, None]
    grid = torch.stack(
        [(ex / w * 2 - 1)[:, None, :].expand(n, res, res), (ey / h * 2 - 1)[:, :, None].expand(n, res, res)], -1
    )
    s = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return s[:, 0] > 0.5


class MaskRCNNDetector:
    """``FrameBatch -> per-frame detections`` with torchvision's Mask R-CNN (people only)."""

    def __init__(self, cfg: DetectConfig) -> None:
        tv = _import_torchvision()
        if not cfg.weights:
            raise HmrflowError(
                "detect.weights: kind=maskrcnn needs a Mask R-CNN weights file (hmrflow downloads nothing)"
            )
        path = Path(cfg.weights)
        if not path.is_file():
            raise CheckpointError(f"{path}: Mask R-CNN weights file not found")
        from hmrflow.pipeline.checkpoints import load_state_dict
        from hmrflow.pipeline.devices import resolve_device

        state = load_state_dict(path)
        name = next((b for b, key in BUILDERS.items() if key in state), None)
        if name is None:
            raise CheckpointError(f"{path}: not a torchvision Mask R-CNN (resnet50 fpn v1/v2) state dict")
        model = getattr(tv.models.detection, name)(weights=None, weights_backbone=None, num_classes=91)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit {name}: {str(exc).splitlines()[0]}") from None
        self.device = resolve_device(cfg.device, "detect.device")
        self.model = model.to(self.device).eval()
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, frames: FrameBatch) -> list[FrameDetections]:
        out: list[FrameDetections] = []
        for s in range(0, len(frames), self.cfg.batch_size):
            imgs = [
                torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255).to(self.device)
                for im in frames.images[s : s + self.cfg.batch_size]
            ]
            for r in self.model(imgs):
                keep = r["labels"] == PERSON_LABEL
                # torchvision boxes are in edge coordinates (0..W); hmrflow uses pixel centres
                boxes = r["boxes"][keep].float().cpu() - 0.5
                masks = masks_in_boxes(r["masks"][keep][:, 0].float().cpu(), boxes)
                out.append(
                    FrameDetections(
                        boxes.numpy().astype(np.float32),
                        r["scores"][keep].float().cpu().numpy().clip(0, 1).astype(np.float32),
                        masks.numpy(),
                    )
                )
        return out
