"""``DetectStage``: FrameBatch -> DetectedFrames (people boxes, scores, box-relative masks).

``cfg.kind`` picks the detector (a plain dict of factories below, no registry):

* ``bundled`` (default): the small dense detector trained on the synthetic world, weights
  shipped in ``stages/detect/weights/detector.safetensors`` (or ``cfg.weights``);
* ``file``: boxes read from ``cfg.detections_path`` (MOT txt or JSON, see
  :mod:`.file_adapter`), for users with their own detector;
* ``maskrcnn``: torchvision's Mask R-CNN with the user's weights file (``cfg.weights``);
* ``onnx``: a YOLO-style ONNX detector or instance segmenter run by onnxruntime
  (``cfg.onnx_path``, see :mod:`.onnx_adapter`);
* ``hog``: OpenCV's built-in HOG people detector, weight-free, for real footage when no model
  is at hand (box masks; see :mod:`.hog_adapter`).

Frames are processed in chunks of ``cfg.batch_size``; any frame size is letterboxed to the
network input and boxes come back in the frame's pixel coordinates.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from hmrflow.pipeline.config import DetectConfig
from hmrflow.pipeline.devices import resolve_device
from hmrflow.pipeline.errors import CheckpointError, ConfigError
from hmrflow.pipeline.results import DetectedFrames
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import MASK_RES, Detections, FrameBatch
from hmrflow.stages.detect.decode_boxes import FrameDetections, decode_frame, to_image_coords
from hmrflow.stages.detect.model import DenseDetector, DetectorSpec, for_inference, normalise
from hmrflow.stages.track.appearance import describe

log = logging.getLogger(__name__)

#: Share of one GPU a worker of this stage asks Ray for when it runs on a GPU (detect and
#: estimate run fused in one actor: together they ask for one GPU).
GPU_SHARE = 0.5

WEIGHTS_FILE = "detector.safetensors"


def bundled_weights_path() -> Path:
    """Path of the weights shipped with the package (may not exist in a source checkout)."""
    return Path(str(resources.files("hmrflow.stages.detect") / "weights" / WEIGHTS_FILE))


def save_detector(model: DenseDetector, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights as safetensors with the architecture (and ``extra``) in the header.

    Floating-point tensors are stored as float16 (half the file; :func:`load_detector`
    copies them into the model's float32 parameters).
    """
    from hmrflow.pipeline.checkpoints import save_state_dict

    meta = {"spec": json.dumps(model.spec.to_dict()), "format": "hmrflow.dense_detector.v1"}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return save_state_dict(state, path, metadata=meta)


def load_detector(path: str | Path, device: torch.device | str = "cpu") -> DenseDetector:
    """Load :func:`save_detector`'s file into an eval-mode model on ``device``."""
    from hmrflow.pipeline.checkpoints import load_state_dict, read_header

    p = Path(path)
    state = load_state_dict(p)
    try:
        spec = DetectorSpec.from_dict(json.loads(read_header(p)["spec"]))
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise CheckpointError(f"{p}: not an hmrflow detector weights file (header: {exc})") from None
    model = DenseDetector(spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{p}: weights do not fit the detector (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval()


def letterbox(images: np.ndarray, spec: DetectorSpec) -> tuple[torch.Tensor, tuple[float, float]]:
    """(B, H, W, 3) uint8 -> normalised (B, 3, in_h, in_w) with the frames resized to fit
    (antialiased), placed top-left, padded with 0; and the (x, y) scale image -> input.

    The resize runs on the uint8 frames as they come (channels last), before normalising:
    torch has a fast path for exactly that, and only the small result is turned into floats,
    instead of the full-resolution frame (the same image up to uint8 rounding)."""
    b, h, w, _ = images.shape
    s = min(spec.input_w / w, spec.input_h / h)
    nw, nh = max(1, min(spec.input_w, round(w * s))), max(1, min(spec.input_h, round(h * s)))
    u = torch.from_numpy(np.ascontiguousarray(images))
    if (nh, nw) != (h, w):
        small = F.interpolate(
            u.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
        )
        u = small.permute(0, 2, 3, 1)
    x = normalise(u)
    x = F.pad(x, (0, spec.input_w - nw, 0, spec.input_h - nh))
    # channels last, the layout the inference detector's convolutions run in without reordering
    return x.contiguous(memory_format=torch.channels_last), (nw / w, nh / h)


@torch.no_grad()
def detect_images(
    model: DenseDetector,
    images: np.ndarray,
    score_threshold: float = 0.5,
    nms_iou: float = 0.7,
    max_det: int = 100,
    device: torch.device | str = "cpu",
) -> list[FrameDetections]:
    """Run the dense detector on (B, H, W, 3) uint8 frames of one size; one result per frame."""
    model.eval()
    b, h, w, _ = images.shape
    x, scale = letterbox(images, model.spec)
    out = model(x.to(device))
    heat = torch.sigmoid(out["heat"][:, 0]).float().cpu()
    fg = torch.sigmoid(out["fg"][:, 0]).float().cpu()
    size, offset, vote = out["size"].float().cpu(), out["offset"].float().cpu(), out["vote"].float().cpu()
    results = []
    for i in range(b):
        boxes, scores, masks = decode_frame(
            heat[i],
            size[i],
            offset[i],
            fg[i],
            vote[i],
            stride=model.stride,
            score_threshold=score_threshold,
            max_det=max_det,
            nms_iou=nms_iou,
        )
        results.append(
            FrameDetections(to_image_coords(boxes, scale, w, h), scores.numpy().astype(np.float32), masks.numpy())
        )
    return results


# ------------------------------------------------------------------ detectors
class BundledDetector:
    """The dense detector behind a ``frames -> per-frame detections`` callable."""

    def __init__(self, cfg: DetectConfig) -> None:
        path = Path(cfg.weights) if cfg.weights else bundled_weights_path()
        if not path.is_file():
            raise CheckpointError(
                f"{path}: detector weights not found; train them with 'hmrflow train detector' "
                "or set detect.weights=FILE"
            )
        self.device = resolve_device(cfg.device, "detect.device")
        self.model = for_inference(load_detector(path, self.device))
        self.cfg = cfg

    def __call__(self, frames: FrameBatch) -> list[FrameDetections]:
        out: list[FrameDetections] = []
        for s in range(0, len(frames), self.cfg.batch_size):
            out += detect_images(
                self.model,
                frames.images[s : s + self.cfg.batch_size],
                self.cfg.score_threshold,
                nms_iou=self.cfg.nms_iou,
                device=self.device,
            )
        return out


def _file_detector(cfg: DetectConfig) -> Callable[[FrameBatch], list[FrameDetections]]:
    from hmrflow.stages.detect.file_adapter import FileDetector

    return FileDetector(cfg)


def _maskrcnn_detector(cfg: DetectConfig) -> Callable[[FrameBatch], list[FrameDetections]]:
    from hmrflow.stages.detect.maskrcnn_adapter import MaskRCNNDetector

    return MaskRCNNDetector(cfg)


def _onnx_detector(cfg: DetectConfig) -> Callable[[FrameBatch], list[FrameDetections]]:
    from hmrflow.stages.detect.onnx_adapter import OnnxDetector

    return OnnxDetector(cfg)


def _hog_detector(cfg: DetectConfig) -> Callable[[FrameBatch], list[FrameDetections]]:
    from hmrflow.stages.detect.hog_adapter import HogDetector

    return HogDetector(cfg)


#: cfg.kind -> factory of a ``FrameBatch -> list[FrameDetections]`` callable (built in setup()).
DETECTORS: dict[str, Callable[[DetectConfig], Callable[[FrameBatch], list[FrameDetections]]]] = {
    "bundled": BundledDetector,
    "file": _file_detector,
    "maskrcnn": _maskrcnn_detector,
    "onnx": _onnx_detector,
    "hog": _hog_detector,
}


#: What the manifest and the log say when the bundled detector runs (it never saw a real person).
SYNTHETIC_DETECTOR_NOTE = (
    "detect.kind=bundled: the bundled person detector was trained on synthetic renders only and misses "
    "most people in real video; for real footage use --preset real (OpenCV's HOG people detector, no "
    "weights) or detect.kind=onnx with detect.onnx_path=MODEL.onnx (see docs/real-video.md)"
)
#: The same for the bundled one-stage estimator.
SYNTHETIC_ONESTAGE_NOTE = (
    "detect.kind=onestage: the bundled one-stage estimator is a small model trained on synthetic renders only; "
    "it misses most people in real video (see docs/bench/onestage.md); give your own weights with "
    "detect.onestage_weights=FILE"
)
_noted: set[str] = set()


def detector_notes(cfg: DetectConfig) -> list[str]:
    """Plain-word caveats about the detector ``cfg`` picks (recorded in every manifest)."""
    if cfg.kind == "bundled" and not cfg.weights:
        return [SYNTHETIC_DETECTOR_NOTE]
    if cfg.kind == "onestage" and not cfg.onestage_weights:
        return [SYNTHETIC_ONESTAGE_NOTE]
    return []


def log_notes_once(cfg: DetectConfig) -> None:
    """Log :func:`detector_notes` as warnings, once per process (not once per video of a batch)."""
    for note in detector_notes(cfg):
        if note not in _noted:
            _noted.add(note)
            log.warning("%s", note)


def to_detections(frames: FrameBatch, per_frame: list[FrameDetections], score_threshold: float) -> Detections:
    """Stack per-frame results into one :class:`Detections` table (scores below threshold dropped),
    with each detection's appearance descriptor computed from its frame under its mask."""
    rows = []
    for f, det in enumerate(per_frame):
        keep = det.scores >= score_threshold
        k = int(keep.sum())
        if k:
            rows.append(
                (
                    np.full(k, f, np.int64),
                    det.boxes_xyxy[keep],
                    det.scores[keep],
                    det.masks[keep],
                )
            )
    if not rows:
        return Detections.empty(frames.video_id)
    cols = [np.concatenate(c) for c in zip(*rows)]
    index, boxes = cols[0], cols[1].astype(np.float32)
    masks = cols[3].astype(bool).reshape(-1, MASK_RES, MASK_RES)
    return Detections(
        video_id=frames.video_id,
        frame_idx=np.asarray(frames.frame_idx, np.int64)[index],
        pts=np.asarray(frames.pts, np.float64)[index],
        boxes_xyxy=boxes,
        scores=np.clip(cols[2], 0, 1).astype(np.float32),
        masks=masks,
        appearance=describe(frames.images, index, boxes, masks),
        at_border=touches_border(boxes, frames.images.shape[2], frames.images.shape[1]),
    )


#: A box whose edge is this close to the image border touches it: a share of the image's longer
#: side (a person entering the view stays a few pixels from the edge for a while).
BORDER_FRAC = 0.015


def touches_border(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,) bool: boxes (N, 4) within ``BORDER_FRAC`` of the longer side of the image edge
    (pixel-centre coordinates, the image spanning [-0.5, W - 0.5] x [-0.5, H - 0.5])."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    m = BORDER_FRAC * max(width, height)
    return (b[:, 0] <= -0.5 + m) | (b[:, 1] <= -0.5 + m) | (b[:, 2] >= width - 0.5 - m) | (b[:, 3] >= height - 0.5 - m)


class DetectStage(BaseStage[FrameBatch, DetectedFrames]):
    """Stage: ``FrameBatch -> DetectedFrames`` (frames kept for the estimator)."""

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=GPU_SHARE)

    def __init__(self, cfg: DetectConfig) -> None:
        super().__init__()
        if cfg.kind not in DETECTORS:
            raise ConfigError(f"detect.kind: unknown detector {cfg.kind!r}; choose one of {sorted(DETECTORS)}")
        self.cfg = cfg
        self._detector: Callable[[FrameBatch], list[FrameDetections]] | None = None

    def device_setting(self) -> str | None:
        """``detect.device``; None for boxes read from a file (no model, never a GPU)."""
        return None if self.cfg.kind == "file" else str(self.cfg.device)

    def setup(self) -> None:
        """Load weights / read the detections file; resolve the device."""
        self._detector = DETECTORS[self.cfg.kind](self.cfg)
        log_notes_once(self.cfg)
        super().setup()

    def __call__(self, frames: FrameBatch) -> DetectedFrames:
        self.ensure_setup()
        assert self._detector is not None
        per_frame = self._detector(frames) if len(frames) else []
        if self.cfg.masks == "box":
            per_frame = [FrameDetections(d.boxes_xyxy, d.scores, np.ones_like(d.masks, dtype=bool)) for d in per_frame]
        return DetectedFrames(frames=frames, detections=to_detections(frames, per_frame, self.cfg.score_threshold))
