"""``CameraObserver``: the frame stage that looks at the camera while the frames exist.

It sits between detection and estimation and passes its input through unchanged.  Unlike
other stages it keeps per-clip state: the runner calls :meth:`CameraObserver.begin_clip`
before a clip's first frame is decoded and :meth:`CameraObserver.end_clip` after its last,
and what it saw (camera-motion homographies, per-frame field-of-view answers, the user's
intrinsics checked against the video) leaves with the clip's other frame-part results to
the video stages (:mod:`hmrflow.stages.camera.world`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from hmrflow.pipeline.config import CameraConfig
from hmrflow.pipeline.results import DetectedFrames
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import ClipRef
from hmrflow.stages.camera.intrinsics import user_intrinsics

log = logging.getLogger(__name__)

#: Frames between field-of-view samples when the clip's length is unknown.
FOV_STRIDE_UNKNOWN = 15


class CameraObserver(BaseStage[DetectedFrames, DetectedFrames]):
    """Pass-through frame stage gathering the camera observations of a clip (see module docstring)."""

    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, cfg: CameraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._fov_model: Any = None
        self._reset(None)

    def device_setting(self) -> str | None:
        return None  # a tiny network on the CPU: never asks for a GPU

    @property
    def runs_network(self) -> bool:
        """True when the camera network runs: to estimate the field of view, or the camera's
        tilt for the world frame."""
        return (self.cfg.fov == "estimate" and not self.cfg.has_intrinsics) or self.cfg.world

    def setup(self) -> None:
        if self.runs_network and self._fov_model is None:
            from hmrflow.stages.camera.fov import load_fov

            self._fov_model = load_fov(self.cfg.fov_weights)
        super().setup()

    def _reset(self, clip: ClipRef | None) -> None:
        from hmrflow.stages.camera.motion import MotionTracker

        self._tracker = MotionTracker(self.cfg.motion_max_side) if self.cfg.motion == "estimate" else None
        self._seen = 0
        self._frames: list[int] = []
        self._pts: list[float] = []
        self._fov_idx: list[int] = []
        self._fov_val: list[float] = []
        self._fov_up: list[list[float]] = []
        n = clip.n_frames if clip is not None else -1
        self._stride = max(1, n // self.cfg.fov_frames) if n > 0 else FOV_STRIDE_UNKNOWN

    def begin_clip(self, clip: ClipRef) -> None:
        """Start a clip; the user's intrinsics are checked against its size here, before decoding."""
        user_intrinsics(self.cfg, clip.width, clip.height)  # raises ConfigError naming the value
        self.ensure_setup()
        self._reset(clip)

    def __call__(self, x: DetectedFrames) -> DetectedFrames:
        frames, det = x.frames, x.detections
        if not len(frames):
            return x
        rows = np.asarray(det.frame_idx)
        sample = []
        for i, f in enumerate(np.asarray(frames.frame_idx)):
            self._frames.append(int(f))
            self._pts.append(float(frames.pts[i]))
            if self._tracker is not None and self._seen % self.cfg.motion_stride == 0:
                self._tracker.add(int(f), float(frames.pts[i]), frames.images[i], det.boxes_xyxy[rows == f])
            if self.runs_network and self._seen % self._stride == 0:
                sample.append(i)
            self._seen += 1
        if sample:
            from hmrflow.stages.camera.fov import predict_camera, resize_for_fov

            h, w = frames.images.shape[1:3]
            small = np.stack([resize_for_fov(frames.images[i]) for i in sample])
            focal, up = predict_camera(self._fov_model, small, w / h)
            self._fov_val.extend(float(v) for v in focal)
            self._fov_up.extend(np.round(up.astype(np.float64), 6).tolist())
            self._fov_idx.extend(int(frames.frame_idx[i]) for i in sample)
        return x

    def end_clip(self) -> dict[str, Any]:
        """What the clip showed (JSON-able): ``frames`` (``frame_idx`` and ``pts`` of every frame seen),
        ``motion`` (every ``camera.motion_stride``-th frame; see
        :meth:`~hmrflow.stages.camera.motion.MotionTracker.result`, None when not estimated),
        ``fov`` (``frame_idx``, ``focal_rel`` and ``up`` (the up direction in that frame's
        camera) of the sampled frames, None when not estimated)."""
        fov = {"frame_idx": self._fov_idx, "focal_rel": self._fov_val, "up": self._fov_up}
        out: dict[str, Any] = {
            "frames": {"frame_idx": self._frames, "pts": self._pts},
            "motion": self._tracker.result() if self._tracker is not None else None,
            "fov": fov if self.runs_network else None,
        }
        self._reset(None)
        return out
