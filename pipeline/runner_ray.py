"""Ray runner: the LocalRunner's stages as a Ray Data pipeline over many videos.

Dataflow (one Ray Data row per video in, one row per video between the operators, one
outcome row per video out)::

    from_items([{video_id, path, extra}])                       one row per video
      .map_batches(FusedFrames, batch_size=1, actors)          probe -> decode -> detect -> estimate
            (frames exist only inside this operator; it emits the video's estimates table)
      .map_batches(FinishVideo, batch_size=1, actors or tasks) track -> to_sequences -> refine -> write
      -> outcome rows (ok, error, counts) streamed back to the driver

* Decoded frames never enter the object store: decode and the frame stages run fused in
  one actor (optionally inside a supervised child process, see :mod:`.worker`, so a hung
  decoder is killed after ``stall_timeout_s`` and reported as a failed video).  What
  crosses the object store is the video's small estimates table (about 1 KB per person and
  frame), packed losslessly into one row, so the finishing stages see exactly the rows, in
  the order, that the LocalRunner gives them: the outputs are identical.
* No shuffle and no barrier: a video is tracked, refined and written as soon as its frames
  are done, while the frame workers go on with the next videos.
* Each operator asks Ray for what its stages declare for the devices they are configured for
  (:func:`~hmrflow.pipeline.assembly.plan_resources`): CPUs, a GPU share, actor or task.
* Exceptions are caught per video and become error outcomes; one bad video never aborts
  the dataset.

Videos go through in passes of ``videos_per_pass``; each pass starts its actors anew.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from hmrflow.pipeline.assembly import (
    BuiltStages,
    PipelineSpec,
    ResourcePlan,
    VideoOutcome,
    VideoTask,
    error_line,
    outcome_from_output,
    plan_resources,
    setup_stage,
)
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.runner import run_frame_part, run_video_part, run_world
from hmrflow.pipeline.types import ClipRef, MeshEstimates
from hmrflow.pipeline.window import with_task_window
from hmrflow.pipeline.worker import IsolatedWorker, WorkerError, peak_rss_mb

log = logging.getLogger(__name__)


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
    worker: dict[str, Any] | None = None


class FramePartHandler:
    """probe -> decode -> frame stages for one video (in an actor or its worker process).

    finish: also track, refine and write the video here (:class:`Finisher`) and return its
        :class:`VideoOutcome`; used when no stage needs a GPU, so a worker takes whole videos
        and nothing but the outcome leaves it.
    """

    def __init__(self, spec: PipelineSpec, finish: bool = False) -> None:
        self.spec = spec
        self.finish = finish
        self._stages: list[Any] | None = None
        self._finisher: Finisher | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "finish": self.finish}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"], state["finish"])  # type: ignore[misc]

    def setup(self) -> None:
        built = self.spec.build()
        self._stages = built.frame_part()
        for st in self._stages:
            setup_stage(st)
        if self.finish:
            self._finisher = Finisher(self.spec, built)

    def handle(self, task: VideoTask, beat: Callable[[int], None]) -> FramePartResult | VideoOutcome:
        if self._stages is None:
            self.setup()
        assert self._stages is not None
        t0 = time.perf_counter()
        decode, frame_stages = self._stages[0], self._stages[1:]
        clip = with_task_window(self.spec.probe(task.path, task.video_id), task.extra)
        part = run_frame_part(decode, frame_stages, clip, on_batch=beat)
        columns = None
        if part.estimates is not None and len(part.estimates):
            columns = {name: np.ascontiguousarray(getattr(part.estimates, name)) for name in MeshEstimates.ROW_FIELDS}
        res = FramePartResult(clip, columns, part.n_frames, part.timings_s, peak_rss_mb(), part.camera(), part.worker)
        if self._finisher is None:
            return res
        return self._finisher.outcome(task.video_id, _info(task, res, "", time.perf_counter() - t0), columns)


def pack_columns(cols: Mapping[str, np.ndarray] | None) -> bytes:
    """Estimate columns -> one lossless blob (``.npy`` arrays in an uncompressed zip); b"" for none."""
    if cols is None:
        return b""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in cols.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def unpack_columns(blob: bytes) -> dict[str, np.ndarray] | None:
    """Inverse of :func:`pack_columns` (None for b"")."""
    if not blob:
        return None
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _video_row(video_id: str, info: str, estimates: bytes) -> dict[str, np.ndarray]:
    """The one row a video is between the two operators."""
    return {
        "video_id": np.array([video_id], dtype=object),
        "info": np.array([info], dtype=object),
        "estimates": np.array([estimates], dtype=object),
    }


def _info(task: VideoTask, result: FramePartResult | None, error: str, seconds: float) -> dict[str, Any]:
    """What the finishing stages need to know of a video besides its estimates (JSON-able)."""
    info: dict[str, Any] = {"extra": dict(task.extra), "error": error, "seconds": seconds, "path": task.path}
    if result is not None:
        info.update(
            clip=dict(result.clip.__dict__),
            n_frames=result.n_frames,
            timings=dict(result.timings_s),
            peak_rss_mb=result.peak_rss_mb,
            camera=result.camera,
            worker=result.worker,
        )
    return info


def _outcome_batch(outcomes: Sequence[VideoOutcome]) -> dict[str, np.ndarray]:
    """Outcome rows as a Ray Data batch (strings as object columns)."""
    return {
        k: np.array([getattr(o, k) for o in outcomes], dtype=object if k in _STR_FIELDS else None)
        for k in VideoOutcome.__dataclass_fields__
    }


class FusedFrames:
    """Ray actor: decode + frame stages for the videos of a batch, one row per video out.

    isolate: run the stages in a supervised child process (hang timeouts, crash isolation).
    finish: also track, refine and write each video (see :class:`FramePartHandler`); the rows
        out are then outcome rows.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        isolate: bool,
        stall_timeout_s: float,
        video_timeout_s: float | None,
        finish: bool = False,
    ) -> None:
        self.video_timeout_s = video_timeout_s
        self.finish = finish
        self.worker: IsolatedWorker | None = None
        self.handler: FramePartHandler | None = None
        if isolate:
            self.worker = IsolatedWorker(FramePartHandler(spec, finish), stall_timeout_s=stall_timeout_s)
            self.worker.start()
        else:
            self.handler = FramePartHandler(spec, finish)
            self.handler.setup()

    def _one(self, task: VideoTask) -> FramePartResult | VideoOutcome:
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
                if self.finish:
                    yield _outcome_batch(
                        [VideoOutcome(task.video_id, ok=False, error=err, seconds=time.perf_counter() - t0)]
                    )
                else:
                    yield _video_row(task.video_id, json.dumps(_info(task, None, err, time.perf_counter() - t0)), b"")
                continue
            if isinstance(res, VideoOutcome):
                yield _outcome_batch([res])
            else:
                info = _info(task, res, "", time.perf_counter() - t0)
                yield _video_row(
                    task.video_id, json.dumps(info, sort_keys=True, default=str), pack_columns(res.columns)
                )

    def __del__(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()


# ------------------------------------------------------------------ video part
class Finisher:
    """track -> to_sequences -> refine -> write for one video, from its estimates and info."""

    def __init__(self, spec: PipelineSpec, built: BuiltStages | None = None) -> None:
        self.spec = spec
        built = built or spec.build()
        self.track, self.refine, self.write, self.world = built.track, built.refine, built.write, built.world
        self.to_sequences = built.to_sequences
        for st in built.video_part():
            setup_stage(st)

    def outcome(self, vid: str, info: Mapping[str, Any], cols: Mapping[str, np.ndarray] | None) -> VideoOutcome:
        """The video's outcome; a failure becomes an error outcome for this video only."""
        if info.get("error"):
            return VideoOutcome(vid, ok=False, error=info["error"], seconds=float(info.get("seconds", 0)))
        t0 = time.perf_counter()
        try:
            out = self._finish(info, cols)
        except Exception as exc:  # track/refine/write failure
            log.debug("%s failed after decoding", vid, exc_info=True)
            return VideoOutcome(
                vid, ok=False, error=error_line(exc), seconds=float(info.get("seconds", 0)) + time.perf_counter() - t0
            )
        return outcome_from_output(
            vid,
            out,
            int(info["n_frames"]),
            float(info["seconds"]) + time.perf_counter() - t0,
            max(float(info.get("peak_rss_mb", 0.0)), peak_rss_mb()),
        )

    def _finish(self, info: Mapping[str, Any], cols: Mapping[str, np.ndarray] | None) -> Any:
        timings = dict(info.get("timings", {}))
        t_start = time.perf_counter()
        clip = ClipRef(**info["clip"])
        est: MeshEstimates | None = None
        if cols is not None:
            full = dict(cols)
            full["video_id"] = np.array([clip.video_id] * len(cols["frame_idx"]), dtype=object)
            est = MeshEstimates.from_columns(full)
        sequences = run_video_part(est, self.track, self.to_sequences, self.refine, timings)
        extra = dict(info.get("extra", {}))
        extra.setdefault("n_frames_decoded", int(info["n_frames"]))
        sequences, camera, cameras = run_world(self.world, sequences, info.get("camera"), clip, timings)
        if camera is not None:
            extra["camera"] = camera
        timings["total"] = float(info.get("seconds", 0.0)) + time.perf_counter() - t_start
        result = VideoResult(
            clip=clip,
            sequences=sequences,
            config=dict(self.spec.config),
            timings_s=timings,
            extra=extra,
            volatile={"frame_worker": info.get("worker")},
            cameras=cameras,
        )
        return self.write(result)


class FinishVideo:
    """Ray UDF: video rows of :class:`FusedFrames` (estimates + info) -> outcome rows."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.finisher = Finisher(spec)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _outcome_batch(
            [
                self.finisher.outcome(
                    str(batch["video_id"][i]),
                    json.loads(str(batch["info"][i])),
                    unpack_columns(bytes(batch["estimates"][i])),
                )
                for i in range(len(batch["video_id"]))
            ]
        )


#: VideoOutcome fields that are strings (object columns in the outcome batch).
_STR_FIELDS = tuple(k for k, f in VideoOutcome.__dataclass_fields__.items() if f.type in ("str", str))


def finish_videos(batch: Mapping[str, np.ndarray], spec: PipelineSpec) -> dict[str, np.ndarray]:
    """:class:`FinishVideo` as a plain task (for pipelines whose video stages need no actor)."""
    return FinishVideo(spec)(batch)


# ------------------------------------------------------------------ the runner
def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray (dashboard and usage stats off).

    num_cpus / num_gpus: what a local instance declares (None: what Ray detects).
    """
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
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)


@dataclass
class RayRunner:
    """Run a :class:`PipelineSpec` over many videos on Ray (see module docstring).

    frame_workers: actors of the fused decode+frame-stages operator (each holds the models);
        None: as many as the cluster holds (see :meth:`resource_plan`).
    finish_workers: actors of the track/refine/write operator when one of those needs an actor
        (with no stage on a GPU, the frame workers do that work themselves).
    isolate: run the frame stages in a supervised child of each actor (hang timeouts).
    gpus_per_worker: GPUs each frame worker asks for (a fraction shares a GPU between workers);
        None: the frame stages' declared shares when they run on GPUs (see :meth:`resource_plan`).
    videos_per_pass: videos per Ray Data execution.  Each pass starts its actors (and loads
        models) anew: larger passes amortise start-up; outcomes stream back as videos finish
        either way.
    """

    spec: PipelineSpec
    address: str | None = None
    num_cpus: int | None = None
    frame_workers: int | None = None
    finish_workers: int = 1
    isolate: bool = True
    stall_timeout_s: float = 600.0
    video_timeout_s: float | None = None
    videos_per_pass: int = 256
    gpus_per_worker: float | None = None
    _probe_stages: dict[str, Any] = field(default_factory=dict, repr=False)

    def resource_plan(self, cluster_gpus: float | None = None, cluster_cpus: float | None = None) -> ResourcePlan:
        """What each worker asks Ray for (:func:`~hmrflow.pipeline.assembly.plan_resources`);
        the cluster's GPUs and CPUs default to the connected cluster's."""
        if cluster_gpus is None or cluster_cpus is None:
            import ray

            res = ray.cluster_resources()
            cluster_gpus = float(res.get("GPU", 0.0)) if cluster_gpus is None else cluster_gpus
            cluster_cpus = float(res.get("CPU", 1.0)) if cluster_cpus is None else cluster_cpus
        return plan_resources(
            self.spec.build(), cluster_gpus, self.frame_workers, self.finish_workers, self.gpus_per_worker, cluster_cpus
        )

    def dataset(self, tasks: Sequence[VideoTask], plan: ResourcePlan | None = None) -> Any:
        """The Ray Data pipeline for ``tasks`` (lazy; iterate it to run)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        plan = plan or self.resource_plan()
        items = [
            {"video_id": t.video_id, "path": t.path, "extra": json.dumps(dict(t.extra), sort_keys=True, default=str)}
            for t in tasks
        ]
        ds: Any = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), plan.frame_workers * 2)))
        ds = ds.map_batches(
            FusedFrames,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.frame_workers),
            fn_constructor_args=(self.spec, self.isolate, self.stall_timeout_s, self.video_timeout_s, plan.fused),
            num_cpus=plan.frame.cpus,
            num_gpus=plan.frame.gpus or None,
        )
        if plan.fused:  # whole videos per worker: the rows out are outcomes already
            return ds
        # actors are restarted and their tasks retried when a worker dies (Ray Data's default
        # for actor pools: max_restarts=-1, max_task_retries=-1)
        if plan.finish.actor:
            return ds.map_batches(
                FinishVideo,
                batch_size=1,
                batch_format="numpy",
                fn_constructor_args=(self.spec,),
                compute=ray.data.ActorPoolStrategy(size=plan.finish_workers),
                num_cpus=plan.finish.cpus,
                num_gpus=plan.finish.gpus or None,
            )
        # nothing to keep alive: plain tasks build the (cheap) stages per video
        return ds.map_batches(
            finish_videos,
            batch_size=1,
            batch_format="numpy",
            fn_args=(self.spec,),
            num_cpus=plan.finish.cpus,
        )

    def run(self, tasks: Sequence[VideoTask]) -> Iterator[VideoOutcome]:
        """Process ``tasks``; yields one :class:`VideoOutcome` per video as passes finish."""
        ensure_ray(self.address, self.num_cpus)
        plan = self.resource_plan()
        if plan.fused:
            log.info(
                "Ray: %d workers x (%g CPU), each taking whole videos (no stage on a GPU)",
                plan.frame_workers,
                plan.frame.cpus,
            )
        else:
            log.info(
                "Ray workers ask for: %d x frame %s, %d x finish %s",
                plan.frame_workers,
                plan.frame,
                plan.finish_workers,
                plan.finish,
            )
        tasks = list(tasks)
        for s in range(0, len(tasks), max(1, self.videos_per_pass)):
            chunk = tasks[s : s + self.videos_per_pass]
            for row in self.dataset(chunk, plan).iter_rows():
                yield VideoOutcome(**{k: _plain(row[k]) for k in VideoOutcome.__dataclass_fields__})


def _plain(v: Any) -> Any:
    """numpy scalars -> Python values."""
    return v.item() if isinstance(v, np.generic) else v
