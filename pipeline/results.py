"""Containers that travel inside one worker only (not Ray batch types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmrflow.pipeline.types import ClipRef, Detections, FrameBatch, MeshEstimates, SMPLSequence


@dataclass(frozen=True)
class DetectedFrames:
    """Frames plus the people detected in them: the hand-off from detect to estimate.

    Lives only where the frames were decoded; the estimate stage turns it into small
    :class:`~hmrflow.pipeline.types.MeshEstimates` and the images are dropped.
    """

    frames: FrameBatch
    detections: Detections
    #: Filled by a stage that detects and estimates at once (the one-stage path); the estimate
    #: stage of that path passes it on.
    estimates: MeshEstimates | None = None


@dataclass(frozen=True)
class VideoResult:
    """Everything the writer needs for one video.

    sequences: one :class:`SMPLSequence` per track (possibly empty).
    config: the fully resolved config (``PipelineConfig.resolved_dict()``).
    timings_s: wall seconds per stage name.
    extra: free-form provenance (seeds, model hashes, per-video metadata from a manifest).
    volatile: provenance that may differ between two runs of the same input and config (e.g.
        ``frame_worker``: the process that decoded and ran the models), written under the
        manifest's ``volatile`` key.
    cameras: the per-frame camera poses in the world frame
        (:class:`~hmrflow.stages.camera.world.CameraTrack`, written as ``camera.npz``), or None.
    """

    clip: ClipRef
    sequences: list[SMPLSequence]
    config: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    volatile: dict[str, Any] = field(default_factory=dict)
    cameras: Any = None
