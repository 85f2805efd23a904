"""The bundled dense detector as an ONNX model in the YOLOv8 detection layout.

What ``detect.kind=onnx`` reads (:mod:`.onnx_adapter`): input ``images`` (B, 3, H, W) RGB in
[0, 1], letterboxed with grey 114; output ``output0`` (B, 5, h * w): per map cell the box
centre x, y, width and height in input pixels and the person score (the centre heat map kept
only at its 3x3 local maxima, as the bundled decoder does).  Masks are not exported (box masks).

Used to test and time the ONNX path end to end on the synthetic sets, and by users who want the
bundled detector under onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hmrflow.stages.detect.model import PIXEL_MEAN, PIXEL_STD, DenseDetector


class YoloLayout(nn.Module):
    """DenseDetector -> (B, 5, h * w) YOLOv8-layout candidates (cx, cy, w, h, score)."""

    def __init__(self, detector: DenseDetector) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.detector((x * 255.0 - PIXEL_MEAN) / PIXEL_STD)
        heat = torch.sigmoid(out["heat"])  # (B, 1, h, w)
        heat = heat * (heat >= F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype)
        b, _, h, w = heat.shape
        s = float(self.detector.stride)
        cols = torch.arange(w, dtype=heat.dtype).reshape(1, 1, w).expand(1, h, w)
        rows = torch.arange(h, dtype=heat.dtype).reshape(1, h, 1).expand(1, h, w)
        cx = (cols + 0.5 + out["offset"][:, 0]) * s
        cy = (rows + 0.5 + out["offset"][:, 1]) * s
        bw = torch.exp(out["size"][:, 0].clamp(-6, 6)) * s
        bh = torch.exp(out["size"][:, 1].clamp(-6, 6)) * s
        return torch.stack([cx, cy, bw, bh, heat[:, 0]], 1).reshape(b, 5, h * w)


def export_detector_onnx(detector: DenseDetector, path: str | Path) -> Path:
    """Write ``detector`` as a YOLOv8-layout ONNX file (dynamic batch) at ``path``."""
    spec = detector.spec
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, spec.input_h, spec.input_w)
    torch.onnx.export(
        YoloLayout(detector),
        (dummy,),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path
