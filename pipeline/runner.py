"""LocalRunner: one process, one clip at a time, the same Stage classes the Ray runner uses.

Shape of a run::

    decode(clip) -> FrameBatch* -> frame_stages... -> MeshEstimates (per batch, concatenated)
        -> track(all estimates of the video) -> TrackedEstimates
        -> to_sequences(...) -> SMPLSequence per track -> refine (per track) -> write(VideoResult)

Frames exist only inside the per-batch loop; what leaves it is the small estimates table.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from hmrflow.pipeline.prefetch import Prefetcher
from hmrflow.pipeline.provenance import worker_info
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.types import ClipRef, FrameBatch, MeshEstimates, SMPLSequence, TrackedEstimates

log = logging.getLogger(__name__)


class StageTimer:
    """Accumulates wall time per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def call(self, name: str, fn: Callable[[Any], Any], x: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(x)
        finally:
            self.seconds[name] += time.perf_counter() - t0


@dataclass
class FramePart:
    """What the frame-level stages learned about one video (frames themselves are gone).

    estimates: all people of all batches in decode order (None when no batch had anyone).
    n_frames: frames decoded.  frame_hw: (H, W) of the decoded frames (upright, resized),
    None for an empty video.  timings_s: seconds per stage name.  worker: the process that ran
    the frame stages (:func:`~hmrflow.pipeline.provenance.worker_info`).
    """

    estimates: MeshEstimates | None
    n_frames: int
    frame_hw: tuple[int, int] | None
    timings_s: dict[str, float]
    worker: dict[str, Any] = field(default_factory=worker_info)
    observed: dict[str, Any] | None = None

    def camera(self) -> dict[str, Any] | None:
        """The pinhole camera the estimates' ``cam_t`` refer to, plus what the camera observer saw.

        focal_px is the estimator's focal (median over rows); the principal point is the
        centre of the decoded frame, in the decoded frame's pixels (``width`` x ``height``).
        ``observed``: the frame stages' camera observations (``end_clip()`` of
        :class:`~hmrflow.stages.camera.observe.CameraObserver`), for the world stage.
        None when nobody was found.
        """
        if self.frame_hw is None or self.estimates is None or not len(self.estimates):
            return None
        h, w = self.frame_hw
        cam: dict[str, Any] = {
            "model": "pinhole",
            "focal_px": float(np.median(self.estimates.focal)),
            "cx": w / 2.0,
            "cy": h / 2.0,
            "width": int(w),
            "height": int(h),
        }
        if self.observed is not None:
            cam["observed"] = self.observed
        return cam


def run_frame_part(
    decode: Any,
    frame_stages: Sequence[Any],
    clip: ClipRef,
    on_batch: Callable[[int], None] | None = None,
    decode_ahead: int | None = None,
) -> FramePart:
    """decode -> frame stages over one clip, batch by batch; returns the concatenated estimates.

    Decoding runs in a thread up to ``decode_ahead`` batches ahead of the frame stages
    (:class:`~hmrflow.pipeline.prefetch.Prefetcher`; default the decode stage's
    ``cfg.prefetch``, 0 = in line); the timings record its busy seconds under the decode
    stage's name and the frame stages' wait for it as ``decode_wait``.
    ``on_batch(n_frames)`` is called after every batch (progress bars, heartbeats).  Used
    by the LocalRunner and by the Ray runner's fused operator, so both do the same work.
    """
    timer = StageTimer()
    per_batch: list[MeshEstimates] = []
    observers = [st for st in frame_stages if hasattr(st, "begin_clip")]
    for st in observers:  # before the first frame is decoded: they check the clip up front
        timer.call(type(st).__name__, st.begin_clip, clip)
    n_frames, frame_hw = 0, None
    if decode_ahead is None:
        decode_ahead = int(getattr(getattr(decode, "cfg", None), "prefetch", 2))
    # the next batches are decoded while this one is detected and estimated
    batches = Prefetcher(decode(clip), depth=decode_ahead, name="decode") if decode_ahead > 0 else None
    try:
        it: Iterator[FrameBatch] = iter(batches) if batches is not None else iter(decode(clip))
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            timer.seconds["decode_wait"] += time.perf_counter() - t0
            if batch is None:
                break
            if frame_hw is None and len(batch):
                frame_hw = (int(batch.images.shape[1]), int(batch.images.shape[2]))
            x: Any = batch
            for st in frame_stages:
                x = timer.call(type(st).__name__, st, x)
            if not isinstance(x, MeshEstimates):
                raise TypeError(f"the last frame stage must return MeshEstimates, got {type(x).__name__}")
            per_batch.append(x)
            n_frames += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        if batches is not None:
            batches.close()
        # in line, the frame stages' wait is the decoding itself
        timer.seconds[type(decode).__name__] += batches.busy_s if batches is not None else timer.seconds["decode_wait"]
    estimates = MeshEstimates.cat(per_batch) if per_batch else None
    observed: dict[str, Any] | None = None
    for st in observers:
        observed = {**(observed or {}), **timer.call(type(st).__name__, type(st).end_clip, st)}
    return FramePart(estimates, n_frames, frame_hw, dict(timer.seconds), observed=observed)


def run_video_part(
    estimates: MeshEstimates | None,
    track: Any,
    to_sequences: Callable[[TrackedEstimates], list[SMPLSequence]],
    refine: Any | None,
    timings_s: dict[str, float],
) -> list[SMPLSequence]:
    """track -> to_sequences -> refine over one video's estimates (adds to ``timings_s``)."""
    if estimates is None or not len(estimates):
        return []
    timer = StageTimer()
    tracked = timer.call(type(track).__name__, track, estimates)
    sequences = timer.call("to_sequences", to_sequences, tracked)
    if refine is not None:
        sequences = [timer.call(type(refine).__name__, refine, s) for s in sequences]
    for k, v in timer.seconds.items():
        timings_s[k] = timings_s.get(k, 0.0) + v
    return sequences


def run_world(
    world: Any | None,
    sequences: list[SMPLSequence],
    camera: dict[str, Any] | None,
    clip: ClipRef,
    timings_s: dict[str, float],
) -> tuple[list[SMPLSequence], dict[str, Any] | None, Any]:
    """The world stage over one video's refined tracks (adds to ``timings_s``).

    Returns (sequences, the manifest's camera record, per-frame cameras or None).  Without a
    world stage the working camera is the record, minus the raw observations.
    """
    if world is None or not sequences:
        rec = None if camera is None else {k: v for k, v in camera.items() if k != "observed"}
        return sequences, rec, None
    timer = StageTimer()
    res = timer.call(type(world).__name__, world, (sequences, camera, clip))
    for k, v in timer.seconds.items():
        timings_s[k] = timings_s.get(k, 0.0) + v
    return res.sequences, res.record, res.cameras


def result_extra(part: FramePart, extra: dict[str, Any] | None) -> dict[str, Any]:
    """``VideoResult.extra`` of a video: caller's provenance plus frame count and camera."""
    info = dict(extra or {})
    info.setdefault("n_frames_decoded", part.n_frames)
    cam = part.camera()
    if cam is not None:
        info["camera"] = cam
    return info


@dataclass
class LocalRunner:
    """Chains stages over one clip in this process.

    decode: ``ClipRef -> Iterator[FrameBatch]``.
    frame_stages: applied in order to each FrameBatch; the last one returns MeshEstimates.
    track: ``MeshEstimates -> TrackedEstimates`` over the whole video.
    to_sequences: ``TrackedEstimates -> list[SMPLSequence]``.
    refine: ``SMPLSequence -> SMPLSequence`` per track (optional).
    write: ``VideoResult -> Path``.
    world: ``(sequences, camera, clip) -> WorldResult`` (optional).
    """

    decode: Any
    frame_stages: Sequence[Any]
    track: Any
    to_sequences: Callable[[TrackedEstimates], list[SMPLSequence]]
    write: Any
    refine: Any | None = None
    world: Any | None = None
    config: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    _is_setup: bool = False

    def stages(self) -> list[Any]:
        out = [self.decode, *self.frame_stages, self.track, self.write]
        out.extend(s for s in (self.refine, self.world) if s is not None)
        return out

    def setup(self) -> None:
        """Call ``setup()`` once on every stage (weights, devices)."""
        if self._is_setup:
            return
        for st in self.stages():
            if hasattr(st, "setup"):
                st.setup()
        self._is_setup = True

    def run(self, clip: ClipRef, extra: dict[str, Any] | None = None) -> Path:
        """Process one clip end to end and return the output directory."""
        self.setup()
        t_start = time.perf_counter()
        total = clip.n_frames if clip.n_frames > 0 else None
        with tqdm(total=total, desc=clip.video_id, unit="frame", disable=not self.progress, leave=False) as bar:
            part = run_frame_part(self.decode, self.frame_stages, clip, on_batch=bar.update)
        timings = dict(part.timings_s)
        sequences = run_video_part(part.estimates, self.track, self.to_sequences, self.refine, timings)
        info = result_extra(part, extra)
        sequences, camera, cameras = run_world(self.world, sequences, info.pop("camera", None), clip, timings)
        if camera is not None:
            info["camera"] = camera
        timings["total"] = time.perf_counter() - t_start
        result = VideoResult(
            clip=clip,
            sequences=sequences,
            config=self.config,
            timings_s=timings,
            extra=info,
            volatile={"frame_worker": part.worker},
            cameras=cameras,
        )
        timer = StageTimer()
        out = timer.call(type(self.write).__name__, self.write, result)
        log.info("%s: %d frames, %d tracks -> %s", clip.video_id, part.n_frames, len(sequences), out)
        return out

    def run_many(self, clips: Iterable[ClipRef]) -> list[Path]:
        """Run clips one after the other (the batch job adds ledgers and error records)."""
        return [self.run(c) for c in clips]
