"""An ONNX person detector or instance segmenter run by onnxruntime (``detect.kind=onnx``).

hmrflow downloads nothing: export a model at your site (docs/real-video.md) and set
``detect.onnx_path=FILE``.  The output layouts of common exports are decoded:

* ``yolov8`` (also YOLO11 and other anchor-free heads): ``(B, 4 + nc [+ nm], N)``, one column
  per candidate: box centre x, y, width, height in input pixels, then one score per class
  (already through a sigmoid), then ``nm`` mask coefficients for segmentation models;
* ``yolov5`` (anchor-based heads): ``(B, N, 5 + nc [+ nm])``, one row per candidate: box
  centre, size, objectness, class scores (a candidate's score is objectness x class score),
  mask coefficients;
* ``end2end`` (exports with NMS built in, e.g. YOLOv10 or ``nms=True`` exports):
  ``(B, N, 6 [+ nm])`` rows of x1, y1, x2, y2, score, class;
* segmentation models have a second output, the mask prototypes ``(B, nm, mh, mw)`` over the
  input image: a person's mask is ``sigmoid(coefficients @ prototypes) > 0.5`` inside its box.

``detect.onnx_layout=auto`` tells the layouts apart by their shapes (80 COCO classes, or one
class); other class counts need the layout named.  Only ``detect.onnx_person_class`` (0, COCO
"person" in YOLO exports) is kept, and only where it is the candidate's best class.  Frames are
letterboxed as the YOLO exporters expect (resized to fit, centred, padded with grey 114, RGB
in [0, 1]); boxes go through NMS (``detect.nms_iou``) and come back in frame pixels, with
masks resampled into their boxes at ``MASK_RES`` (all-true box masks for detection-only
models, so Mask-ToMe keeps the whole box).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from hmrflow.pipeline.boxes import nms
from hmrflow.pipeline.config import DetectConfig
from hmrflow.pipeline.errors import CheckpointError, ConfigError, HmrflowError
from hmrflow.pipeline.types import MASK_RES, FrameBatch
from hmrflow.stages.detect.decode_boxes import FrameDetections

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "yolov8", "yolov5", "end2end")
#: Grey of the letterbox padding (the YOLO exporters' value).
PAD_VALUE = 114
#: Input size used when the model's input height and width are dynamic.
DEFAULT_INPUT = 640


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise HmrflowError(
            f"detect.kind=onnx needs onnxruntime, which is not importable ({exc}); "
            "pip install 'hmrflow[onnx]' (or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class Letterbox:
    """Frame -> network input mapping: ``input = frame * scale + (pad_x, pad_y)`` (edge coordinates)."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox_frames(images: np.ndarray, in_h: int, in_w: int) -> tuple[np.ndarray, Letterbox]:
    """(B, H, W, 3) uint8 -> (B, 3, in_h, in_w) float32 in [0, 1]: resized to fit, centred, grey padding."""
    import cv2

    b, h, w, _ = images.shape
    s = min(in_w / w, in_h / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    px, py = (in_w - nw) // 2, (in_h - nh) // 2
    out = np.full((b, in_h, in_w, 3), PAD_VALUE, np.uint8)
    for i in range(b):
        img = images[i] if (nh, nw) == (h, w) else cv2.resize(images[i], (nw, nh), interpolation=cv2.INTER_LINEAR)
        out[i, py : py + nh, px : px + nw] = img
    return out.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0), Letterbox(nw / w, float(px), float(py))


def resolve_layout(layout: str, pred_shape: tuple[int, ...], n_mask: int) -> tuple[str, bool]:
    """(layout, channels_first) of a prediction output ``(B, d1, d2)`` with ``n_mask`` mask coefficients.

    ``channels_first``: candidates are the last axis (YOLOv8 exports).  ``auto`` accepts 80 or 1
    classes in the yolov8/yolov5 layouts and ``end2end`` rows of 6 (+ ``n_mask``) values, at
    most 1000 of them (a single-class yolov5 head also has rows of 6, but thousands).
    """
    if len(pred_shape) != 3:
        raise ConfigError(f"ONNX detector output has shape {pred_shape}; expected (batch, a, b)")
    d1, d2 = int(pred_shape[1]), int(pred_shape[2])
    if layout == "yolov8":
        return layout, True
    if layout in ("yolov5", "end2end"):
        return layout, False
    if layout != "auto":
        raise ConfigError(f"detect.onnx_layout: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    v8 = d1 - n_mask - 4 in (80, 1)  # values x candidates
    e2e = d2 - n_mask == 6 and d1 <= 1000  # NMS done inside: at most a few hundred rows
    v5 = d2 - n_mask - 5 in (80, 1)  # candidates x values
    if v8 and (not (e2e or v5) or d1 < d2):  # both fit: the candidates are the longer axis
        return "yolov8", True
    if e2e:
        return "end2end", False
    if v5:
        return "yolov5", False
    raise ConfigError(
        f"detect.onnx_layout=auto cannot read an output of shape {pred_shape} with {n_mask} mask coefficients; "
        f"set detect.onnx_layout to one of yolov8, yolov5, end2end"
    )


def decode_predictions(
    pred: np.ndarray,
    layout: str,
    channels_first: bool,
    n_mask: int,
    person_class: int,
    score_threshold: float,
    nms_iou: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's prediction -> people: boxes (K, 4) xyxy in input edge coordinates, scores (K,)
    and mask coefficients (K, n_mask), strongest first, after NMS (not for ``end2end``)."""
    rows = torch.as_tensor(np.asarray(pred, np.float32))
    if channels_first:
        rows = rows.T
    c = rows.shape[1]
    coeff = rows[:, c - n_mask :] if n_mask else rows[:, :0]
    if layout == "end2end":
        boxes, scores, cls = rows[:, :4], rows[:, 4], rows[:, 5].round().long()
        keep = (cls == person_class) & (scores >= score_threshold)
        order = torch.argsort(scores[keep], descending=True)
        return boxes[keep][order], scores[keep][order], coeff[keep][order]
    first_cls = 4 if layout == "yolov8" else 5
    cls_scores = rows[:, first_cls : c - n_mask]
    if not 0 <= person_class < cls_scores.shape[1]:
        raise ConfigError(f"detect.onnx_person_class={person_class}: the model has {cls_scores.shape[1]} classes")
    if layout == "yolov5":
        cls_scores = cls_scores * rows[:, 4:5]
    scores = cls_scores[:, person_class]
    keep = (cls_scores.argmax(1) == person_class) & (scores >= score_threshold)
    cx, cy, w, h = rows[keep, :4].unbind(1)
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    scores, coeff = scores[keep], coeff[keep]
    idx = nms(boxes, scores, nms_iou)
    return boxes[idx], scores[idx], coeff[idx]


def masks_from_prototypes(
    coeff: torch.Tensor, protos: np.ndarray, boxes: torch.Tensor, in_hw: tuple[int, int], res: int = MASK_RES
) -> torch.Tensor:
    """Mask coefficients (K, nm) with prototypes (nm, mh, mw) over the input -> (K, res, res) bool
    person masks inside input edge-coordinate boxes (K, 4): ``sigmoid(coeff @ protos) > 0.5``
    sampled at the centres of a res x res grid over each box."""
    k = len(boxes)
    if k == 0:
        return torch.zeros(0, res, res, dtype=torch.bool)
    p = torch.as_tensor(np.asarray(protos, np.float32))
    nm, mh, mw = p.shape
    logits = (coeff @ p.reshape(nm, -1)).reshape(k, 1, mh, mw)
    t = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    in_h, in_w = in_hw
    ex = boxes[:, 0, None] + t[None] * (boxes[:, 2] - boxes[:, 0])[:, None]
    ey = boxes[:, 1, None] + t[None] * (boxes[:, 3] - boxes[:, 1])[:, None]
    grid = torch.stack(
        [(ex / in_w * 2 - 1)[:, None, :].expand(k, res, res), (ey / in_h * 2 - 1)[:, :, None].expand(k, res, res)],
        -1,
    )
    sampled = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, 0] > 0.0  # sigmoid(x) > 0.5


def to_frame(boxes: torch.Tensor, lb: Letterbox, width: int, height: int) -> np.ndarray:
    """Input edge-coordinate boxes (K, 4) -> frame pixels (pixel-centre convention), clipped to the frame."""
    b = boxes.clone()
    b[:, 0::2] = ((b[:, 0::2] - lb.pad_x) / lb.scale).clamp(0, width)
    b[:, 1::2] = ((b[:, 1::2] - lb.pad_y) / lb.scale).clamp(0, height)
    return (b - 0.5).numpy().astype(np.float32)


class OnnxDetector:
    """``FrameBatch -> per-frame detections`` with an ONNX YOLO-style model (people only)."""

    def __init__(self, cfg: DetectConfig) -> None:
        if not cfg.onnx_path:
            raise ConfigError("detect.onnx_path: kind=onnx needs the path of an ONNX model file")
        path = Path(cfg.onnx_path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model file not found (detect.onnx_path)")
        ort = _import_onnxruntime()
        from hmrflow.pipeline.devices import resolve_device

        device = resolve_device(cfg.device, "detect.device")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise HmrflowError(
                    "detect.device is CUDA but this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                    "or set detect.device=cpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # share the cores with torch and the decoding thread: as many threads as torch uses,
        # and no spinning between runs (idle onnxruntime threads would spin on cores the
        # estimator needs)
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise CheckpointError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise CheckpointError(f"{path}: expected an image input (batch, 3, height, width), got {shape}")
        self.input_name = inp.name
        self.in_h = shape[2] if isinstance(shape[2], int) else cfg.onnx_input_size
        self.in_w = shape[3] if isinstance(shape[3], int) else cfg.onnx_input_size
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        outs = self.session.get_outputs()
        if not 1 <= len(outs) <= 2:
            raise CheckpointError(f"{path}: expected 1 output (detection) or 2 (with mask prototypes), got {len(outs)}")
        self.has_masks = len(outs) == 2
        self.n_mask = int(outs[1].shape[1]) if self.has_masks else 0
        if self.has_masks and not isinstance(outs[1].shape[1], int):
            raise CheckpointError(f"{path}: the prototype output needs a fixed number of masks, got {outs[1].shape}")
        self.cfg = cfg
        self.path = path
        self.provider = providers[0] if isinstance(providers[0], str) else providers[0][0]
        self.layout: str | None = None
        self.channels_first = False
        pred_shape = tuple(d if isinstance(d, int) else -1 for d in outs[0].shape)
        if len(pred_shape) == 3 and min(pred_shape[1:]) > 0:  # known now; else from the first output
            self._set_layout(pred_shape)

    def _set_layout(self, pred_shape: tuple[int, ...]) -> None:
        try:
            self.layout, self.channels_first = resolve_layout(self.cfg.onnx_layout, pred_shape, self.n_mask)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        log.info(
            "ONNX detector %s: input %dx%d, layout %s%s, %s",
            self.path.name,
            self.in_w,
            self.in_h,
            self.layout,
            f", {self.n_mask} mask prototypes" if self.has_masks else " (box masks)",
            self.provider,
        )

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: x})
        outs: list[list[np.ndarray]] = []
        for s in range(0, len(x), self.fixed_batch):
            chunk = x[s : s + self.fixed_batch]
            n = len(chunk)
            if n < self.fixed_batch:  # a fixed-batch export: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append([o[:n] for o in self.session.run(None, {self.input_name: chunk})])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def __call__(self, frames: FrameBatch) -> list[FrameDetections]:
        out: list[FrameDetections] = []
        h, w = frames.images.shape[1:3]
        for s in range(0, len(frames), self.cfg.batch_size):
            x, lb = letterbox_frames(frames.images[s : s + self.cfg.batch_size], self.in_h, self.in_w)
            res = self._run(x)
            if self.layout is None:
                self._set_layout(tuple(res[0].shape))
            assert self.layout is not None
            for i in range(len(x)):
                boxes, scores, coeff = decode_predictions(
                    res[0][i],
                    self.layout,
                    self.channels_first,
                    self.n_mask,
                    self.cfg.onnx_person_class,
                    self.cfg.score_threshold,
                    self.cfg.nms_iou,
                )
                if self.has_masks:
                    masks = masks_from_prototypes(coeff, res[1][i], boxes, (self.in_h, self.in_w))
                else:
                    masks = torch.ones(len(boxes), MASK_RES, MASK_RES, dtype=torch.bool)
                out.append(
                    FrameDetections(
                        to_frame(boxes, lb, w, h), scores.numpy().clip(0, 1).astype(np.float32), masks.numpy()
                    )
                )
        return out
