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

from tqdm.auto import tqdm

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
class LocalRunner:
    """Chains stages over one clip in this process.

    decode: ``ClipRef -> Iterator[FrameBatch]``.
    frame_stages: applied in order to each FrameBatch; the last one returns MeshEstimates.
    track: ``MeshEstimates -> TrackedEstimates`` over the whole video.
    to_sequences: ``TrackedEstimates -> list[SMPLSequence]``.
    refine: ``SMPLSequence -> SMPLSequence`` per track (optional).
    write: ``VideoResult -> Path``.
    """

    decode: Any
    frame_stages: Sequence[Any]
    track: Any
    to_sequences: Callable[[TrackedEstimates], list[SMPLSequence]]
    write: Any
    refine: Any | None = None
    config: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    _is_setup: bool = False

    def stages(self) -> list[Any]:
        out = [self.decode, *self.frame_stages, self.track, self.write]
        if self.refine is not None:
            out.append(self.refine)
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
        timer = StageTimer()
        t_start = time.perf_counter()
        per_batch: list[MeshEstimates] = []
        total = clip.n_frames if clip.n_frames > 0 else None
        bar = tqdm(total=total, desc=clip.video_id, unit="frame", disable=not self.progress, leave=False)
        batches: Iterator[FrameBatch] = iter(self.decode(clip))
        n_frames = 0
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            timer.seconds[type(self.decode).__name__] += time.perf_counter() - t0
            if batch is None:
                break
            x: Any = batch
            for st in self.frame_stages:
                x = timer.call(type(st).__name__, st, x)
            if not isinstance(x, MeshEstimates):
                raise TypeError(f"the last frame stage must return MeshEstimates, got {type(x).__name__}")
            per_batch.append(x)
            n_frames += len(batch)
            bar.update(len(batch))
        bar.close()
        estimates = MeshEstimates.cat(per_batch) if per_batch else None
        sequences: list[SMPLSequence] = []
        if estimates is not None and len(estimates):
            tracked = timer.call(type(self.track).__name__, self.track, estimates)
            sequences = timer.call("to_sequences", self.to_sequences, tracked)
            if self.refine is not None:
                sequences = [timer.call(type(self.refine).__name__, self.refine, s) for s in sequences]
        info = dict(extra or {})
        info.setdefault("n_frames_decoded", n_frames)
        timings = dict(timer.seconds)
        timings["total"] = time.perf_counter() - t_start
        result = VideoResult(clip=clip, sequences=sequences, config=self.config, timings_s=timings, extra=info)
        out = timer.call(type(self.write).__name__, self.write, result)
        log.info("%s: %d frames, %d tracks -> %s", clip.video_id, n_frames, len(sequences), out)
        return out

    def run_many(self, clips: Iterable[ClipRef]) -> list[Path]:
        """Run clips one after the other (the batch job adds ledgers and error records)."""
        return [self.run(c) for c in clips]
