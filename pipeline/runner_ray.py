"""Ray runner: the LocalRunner's stages as a Ray Data pipeline over many videos.

Dataflow (one Ray Data row per video in, one outcome row per video out)::

    from_items([{video_id, path, extra}])                     one row per video
      .map_batches(FusedFrames, batch_size=1, actors, num_gpus)   probe -> decode -> detect -> estimate
            (frames exist only inside this operator; it emits MeshEstimates rows + one info row)
      .groupby("video_id").map_groups(FinishVideo)            track -> to_sequences -> refine -> write
      -> outcome rows (ok, error, counts) streamed back to the driver

* Decoded frames never enter the object store: decode and the frame stages run fused in
  one actor (optionally inside a supervised child process, see :mod:`.worker`, so a hung
  decoder is killed after ``stall_timeout_s`` and reported as a failed video).  What
  crosses the object store is the small estimates table (about 1 KB per person and frame).
* Stages with a ``setup`` or GPUs run as actor pools (``ActorPoolStrategy``) with the
  GPUs they declare and an explicit batch size; the others as tasks.
* Exceptions are caught per video and become error outcomes; one bad video never aborts
  the dataset.
* Tracking needs a whole video: ``groupby(video_id)``; rows are put back in decode order
  (a ``_row`` ordinal) so the track, refine and write stages see exactly what the
  LocalRunner gives them, and the outputs are identical.

Videos go through in passes of ``videos_per_pass`` so results are committed while a long
job runs (the groupby is a barrier within one pass).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from hmrflow.pipeline.assembly import (
    PipelineSpec,
    VideoOutcome,
    VideoTask,
    error_line,
    needs_actor,
    outcome_from_output,
    setup_stage,
    stage_gpus,
)
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.runner import run_frame_part, run_video_part
from hmrflow.pipeline.types import ClipRef, MeshEstimates
from hmrflow.pipeline.worker import IsolatedWorker, WorkerError, peak_rss_mb

log = logging.getLogger(__name__)

#: Row kinds of the fused operator's output.
KIND_ESTIMATE, KIND_INFO = 0, 1
#: Estimates rows per emitted batch (bounds one block's size for very long videos).
EMIT_ROWS = 4096


# ------------------------------------------------------------------ frame part
@dataclass(frozen=True)
class FramePartResult:
    """What the fused frame operator learned about one video.

    columns: ``MeshEstimates.to_columns()`` of all batches concatenated in decode order
        (None when no person was found in any batch).
    """

    clip: ClipRef
    columns: dict[str, np.ndarray] | None
    n_frames: int
    timings_s: dict[str, float]
    peak_rss_mb: float = 0.0
    camera: dict[str, Any] | None = None


class FramePartHandler:
    """probe -> decode -> frame stages for one video (in an actor or its worker process)."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self._stages: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])  # type: ignore[misc]

    def setup(self) -> None:
        built = self.spec.build()
        self._stages = built.frame_part()
        for st in self._stages:
            setup_stage(st)

    def handle(self, task: VideoTask, beat: Callable[[int], None]) -> FramePartResult:
        if self._stages is None:
            self.setup()
        assert self._stages is not None
        decode, frame_stages = self._stages[0], self._stages[1:]
        clip = self.spec.probe(task.path, task.video_id)
        part = run_frame_part(decode, frame_stages, clip, on_batch=beat)
        columns = None
        if part.estimates is not None and len(part.estimates):
            columns = {name: np.ascontiguousarray(getattr(part.estimates, name)) for name in MeshEstimates.ROW_FIELDS}
        return FramePartResult(clip, columns, part.n_frames, part.timings_s, peak_rss_mb(), part.camera())


def _placeholder_columns() -> dict[str, np.ndarray]:
    """One row of zeros in the estimate columns (carries an info row through the same schema)."""
    row = MeshEstimates.empty("", 1)
    return {name: getattr(row, name) for name in MeshEstimates.ROW_FIELDS}


def _rows(video_id: str, kind: int, start: int, cols: Mapping[str, np.ndarray], info: str) -> dict[str, np.ndarray]:
    """One emitted batch: estimate columns plus the runner's bookkeeping columns."""
    n = len(cols["frame_idx"])
    out = {
        "video_id": np.array([video_id] * n, dtype=object),
        "_kind": np.full(n, kind, np.int8),
        "_row": np.arange(start, start + n, dtype=np.int64),
        "_info": np.array([info] * n, dtype=object),
    }
    for name in MeshEstimates.ROW_FIELDS:
        out[name] = np.ascontiguousarray(cols[name])
    return out


def _info_json(task: VideoTask, result: FramePartResult | None, error: str, seconds: float) -> str:
    info: dict[str, Any] = {"extra": dict(task.extra), "error": error, "seconds": seconds, "path": task.path}
    if result is not None:
        info.update(clip=result.clip.__dict__, n_frames=result.n_frames, timings=result.timings_s,
                    peak_rss_mb=result.peak_rss_mb, camera=result.camera)
    return json.dumps(info, sort_keys=True, default=str)


class FusedFrames:
    """Ray actor: decode + frame stages for the videos of a batch, emitting estimate rows.

    isolate: run the stages in a supervised child process (hang timeouts, crash isolation).
    """

    def __init__(self, spec: PipelineSpec, isolate: bool, stall_timeout_s: float, video_timeout_s: float | None) -> None:
        self.video_timeout_s = video_timeout_s
        self.worker: IsolatedWorker | None = None
        self.handler: FramePartHandler | None = None
        if isolate:
            self.worker = IsolatedWorker(FramePartHandler(spec), stall_timeout_s=stall_timeout_s)
            self.worker.start()
        else:
            self.handler = FramePartHandler(spec)
            self.handler.setup()

    def _one(self, task: VideoTask) -> FramePartResult:
        if self.worker is not None:
            return self.worker.call(task, total_timeout_s=self.video_timeout_s)
        assert self.handler is not None
        return self.handler.handle(task, lambda n: None)

    def __call__(self, batch: Mapping[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(batch["video_id"])):
            task = VideoTask(str(batch["video_id"][i]), str(batch["path"][i]), json.loads(str(batch["extra"][i])))
            t0 = time.perf_counter()
            try:
                res = self._one(task)
            except Exception as exc:  # per-video error record, never a failed block
                err = str(exc) if isinstance(exc, WorkerError) else error_line(exc)
                yield _rows(task.video_id, KIND_INFO, 0, _placeholder_columns(),
                            _info_json(task, None, err, time.perf_counter() - t0))
                continue
            n = 0 if res.columns is None else len(res.columns["frame_idx"])
            for s in range(0, n, EMIT_ROWS):
                part = {k: v[s:s + EMIT_ROWS] for k, v in res.columns.items()}  # type: ignore[union-attr]
                yield _rows(task.video_id, KIND_ESTIMATE, s, part, "")
            yield _rows(task.video_id, KIND_INFO, n, _placeholder_columns(),
                        _info_json(task, res, "", time.perf_counter() - t0))

    def __del__(self) -> None:
        if getattr(self, "worker", None) is not None:
            self.worker.close()


# ------------------------------------------------------------------ video part
def _outcome_columns(o: VideoOutcome) -> dict[str, np.ndarray]:
    d = o.to_dict()
    return {k: np.array([v], dtype=object if isinstance(v, str) else None) for k, v in d.items()}


class FinishVideo:
    """Ray map_groups UDF: one video's estimate rows -> track -> sequences -> refine -> write."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        built = spec.build()
        self.track, self.refine, self.write = built.track, built.refine, built.write
        self.to_sequences = built.to_sequences
        for st in built.video_part():
            setup_stage(st)

    def __call__(self, group: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        kind = np.asarray(group["_kind"])
        vid = str(group["video_id"][0])
        infos = [json.loads(str(x)) for x in np.asarray(group["_info"])[kind == KIND_INFO]]
        if len(infos) != 1:
            return _outcome_columns(VideoOutcome(vid, ok=False, error=f"internal: {len(infos)} info rows for one video"))
        info = infos[0]
        if info.get("error"):
            return _outcome_columns(VideoOutcome(vid, ok=False, error=info["error"], seconds=float(info.get("seconds", 0))))
        t0 = time.perf_counter()
        try:
            out = self._finish(group, kind, info)
        except Exception as exc:  # track/refine/write failure: an error record for this video only
            log.debug("%s failed after decoding", vid, exc_info=True)
            return _outcome_columns(VideoOutcome(vid, ok=False, error=error_line(exc),
                                                 seconds=float(info.get("seconds", 0)) + time.perf_counter() - t0))
        o = outcome_from_output(vid, out, int(info["n_frames"]), float(info["seconds"]) + time.perf_counter() - t0,
                                max(float(info.get("peak_rss_mb", 0.0)), peak_rss_mb()))
        return _outcome_columns(o)

    def _finish(self, group: Mapping[str, np.ndarray], kind: np.ndarray, info: Mapping[str, Any]) -> Any:
        timings = dict(info.get("timings", {}))
        t_start = time.perf_counter()
        clip = ClipRef(**info["clip"])
        est_rows = np.flatnonzero(kind == KIND_ESTIMATE)
        est: MeshEstimates | None = None
        if est_rows.size:
            order = est_rows[np.argsort(np.asarray(group["_row"])[est_rows], kind="stable")]
            cols = {name: np.asarray(group[name])[order] for name in MeshEstimates.ROW_FIELDS}
            cols["video_id"] = np.array([clip.video_id] * len(order), dtype=object)
            est = MeshEstimates.from_columns(cols)
        sequences = run_video_part(est, self.track, self.to_sequences, self.refine, timings)
        extra = dict(info.get("extra", {}))
        extra.setdefault("n_frames_decoded", int(info["n_frames"]))
        if info.get("camera") is not None:
            extra["camera"] = info["camera"]
        timings["total"] = float(info.get("seconds", 0.0)) + time.perf_counter() - t_start
        result = VideoResult(clip=clip, sequences=sequences, config=dict(self.spec.config), timings_s=timings, extra=extra)
        return self.write(result)


# ------------------------------------------------------------------ the runner
def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray (dashboard and usage stats off)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
        return
    # a local cluster's workers import what this process can (e.g. test or user stage modules)
    path = os.pathsep.join(dict.fromkeys(p for p in sys.path if p and os.path.isdir(p)))
    ray.init(num_cpus=num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)


@dataclass
class RayRunner:
    """Run a :class:`PipelineSpec` over many videos on Ray (see module docstring).

    frame_workers: actors of the fused decode+frame-stages operator (each holds the models).
    finish_workers: actors of the track/refine/write operator when one of those needs an actor.
    isolate: run the frame stages in a supervised child of each actor (hang timeouts).
    videos_per_pass: videos per Ray Data execution.  The groupby is a barrier inside a pass,
        so outcomes of a pass are committed when its decoding is over, and each pass starts
        its actors (and loads models) anew: larger passes amortise start-up, smaller ones
        lose less work when the driver is killed.
    """

    spec: PipelineSpec
    address: str | None = None
    num_cpus: int | None = None
    frame_workers: int = 1
    finish_workers: int = 1
    isolate: bool = True
    stall_timeout_s: float = 600.0
    video_timeout_s: float | None = None
    videos_per_pass: int = 256
    _probe_stages: dict[str, Any] = field(default_factory=dict, repr=False)

    def _resources(self) -> tuple[float, bool, float]:
        """(GPUs of the fused operator, whether finishing needs actors, GPUs of finishing)."""
        built = self.spec.build()
        frame_gpus = max([stage_gpus(s) for s in built.frame_part()] or [0.0])
        video = built.video_part()
        finish_actor = any(needs_actor(s) for s in video)
        finish_gpus = max([stage_gpus(s) for s in video] or [0.0])
        return frame_gpus, finish_actor, finish_gpus

    def dataset(self, tasks: Sequence[VideoTask]) -> Any:
        """The Ray Data pipeline for ``tasks`` (lazy; iterate it to run)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        # the pull-based sort shuffle uses plain tasks (no aggregator actors to start): the
        # cheapest for one pass of a few dozen small per-video tables
        ctx.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        frame_gpus, _finish_actor, finish_gpus = self._resources()
        items = [{"video_id": t.video_id, "path": t.path, "extra": json.dumps(dict(t.extra), sort_keys=True, default=str)}
                 for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), self.frame_workers * 2)))
        ds = ds.map_batches(
            FusedFrames,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.frame_workers),
            fn_constructor_args=(self.spec, self.isolate, self.stall_timeout_s, self.video_timeout_s),
            num_cpus=1,
            num_gpus=frame_gpus or None,
        )
        # actors are restarted and their tasks retried when a worker dies (Ray Data's default
        # for actor pools: max_restarts=-1, max_task_retries=-1)
        grouped = ds.groupby("video_id", num_partitions=max(1, min(len(items), 2 * self.finish_workers)))
        return grouped.map_groups(
            FinishVideo,
            batch_format="numpy",
            fn_constructor_args=(self.spec,),
            compute=ray.data.ActorPoolStrategy(size=self.finish_workers),
            num_gpus=finish_gpus or None,
        )

    def run(self, tasks: Sequence[VideoTask]) -> Iterator[VideoOutcome]:
        """Process ``tasks``; yields one :class:`VideoOutcome` per video as passes finish."""
        ensure_ray(self.address, self.num_cpus)
        tasks = list(tasks)
        for s in range(0, len(tasks), max(1, self.videos_per_pass)):
            chunk = tasks[s:s + self.videos_per_pass]
            for row in self.dataset(chunk).iter_rows():
                yield VideoOutcome(**{k: _plain(row[k]) for k in VideoOutcome.__dataclass_fields__})


def _plain(v: Any) -> Any:
    """numpy scalars -> Python values."""
    return v.item() if isinstance(v, np.generic) else v
