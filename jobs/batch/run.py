"""Batch jobs over many videos: ledger + runner + per-video error records + summary.

:func:`run_batch` is what ``hmrflow batch`` and ``hmrflow job run`` execute:

1. take the job lock of the output directory (``OUT/_job/lock``; a second job on the same
   directory stops with :class:`~hmrflow.jobs.batch.locking.LockHeld`), clear temporaries
   left by killed writers;
2. plan with the ledger (``OUT/_job/ledger.sqlite``): new videos queued, done ones
   skipped, failed ones retried up to ``max_attempts``, interrupted ones redone;
3. run the queued videos with the local runner (a supervised worker process that is
   killed and replaced when a video hangs: stall / total timeouts) or the Ray runner;
   every outcome is committed to the ledger as it arrives; one bad video is recorded as
   failed with its reason and the others go on (``strict`` stops at the first failure);
4. write the run's QC report (``OUT/_job/reports/<run_id>/qc.{json,md,csv}``) and
   return a :class:`BatchSummary` (exit code: 0 all done, 1 some failed, 3 strict stop).

Outputs are written atomically by the write stage *before* a row turns ``done``, so
killing the job at any moment (``kill -9`` included) loses nothing already done and leaves
no half-written output; the next run picks up where this one stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from hmrflow.jobs.batch.inputs import JOB_DIR, InputVideo
from hmrflow.jobs.batch.ledger import Ledger, PlannedInput
from hmrflow.jobs.batch.locking import JobLock
from hmrflow.pipeline.assembly import (
    HeartbeatDecode,
    PipelineSpec,
    VideoOutcome,
    VideoTask,
    error_line,
    outcome_from_output,
)
from hmrflow.pipeline.atomic import remove_stale_temps
from hmrflow.pipeline.provenance import config_hash
from hmrflow.pipeline.window import Window, window_of, with_task_window
from hmrflow.pipeline.worker import IsolatedWorker, WorkerError, peak_rss_mb

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "lock"
REPORTS_DIR = "reports"

EXIT_OK, EXIT_FAILED, EXIT_STRICT = 0, 1, 3


def job_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``OUT/_job``: ledger, lock and reports of the jobs writing into ``OUT``."""
    return Path(out_dir) / JOB_DIR


def ledger_path(out_dir: str | os.PathLike[str]) -> Path:
    return job_dir(out_dir) / LEDGER_FILE


def lock_path(out_dir: str | os.PathLike[str]) -> Path:
    return job_dir(out_dir) / LOCK_FILE


# ------------------------------------------------------------------- local work
class LocalVideoHandler:
    """Runs the LocalRunner over one video per request (inside a worker process).

    ``handle(task, beat)`` returns a :class:`VideoOutcome` (``ok=True``); errors propagate
    (the worker turns them into one-line :class:`RemoteError` s).  ``beat(n)`` is called for
    every decoded batch of ``n`` frames.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self._runner: Any = None
        self._beat: Callable[[int], None] = lambda n: None
        self._frames = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])  # type: ignore[misc]

    def _on_batch(self, n: int) -> None:
        self._frames += n
        self._beat(n)

    def setup(self) -> None:
        built = self.spec.build()
        built = dataclasses.replace(built, decode=HeartbeatDecode(built.decode, self._on_batch))
        self._runner = self.spec.local_runner(progress=False, built=built)
        self._runner.setup()

    def handle(self, task: VideoTask, beat: Callable[[int], None]) -> VideoOutcome:
        if self._runner is None:
            self.setup()
        self._beat, self._frames = beat, 0
        t0 = time.perf_counter()
        clip = with_task_window(self.spec.probe(task.path, task.video_id), task.extra)
        out = self._runner.run(clip, extra=dict(task.extra))
        return outcome_from_output(task.video_id, out, self._frames, time.perf_counter() - t0, peak_rss_mb())


def run_local(
    tasks: Sequence[VideoTask],
    spec: PipelineSpec,
    *,
    isolate: bool = True,
    stall_timeout_s: float = 600.0,
    video_timeout_s: float | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_start: Callable[[str], object] | None = None,
) -> Iterator[VideoOutcome]:
    """Process ``tasks`` one after the other; yields one outcome per task, failures included.

    isolate: run in a supervised worker process (hang timeouts, crash isolation); False runs
        in this process (no timeouts; for debugging).
    on_start(video_id) is called before each video (the batch job marks it running).
    A :class:`~hmrflow.pipeline.worker.WorkerSetupError` (stages cannot be set up) is raised.
    """
    if not isolate:
        handler = LocalVideoHandler(spec)
        handler.setup()
        for task in tasks:
            if on_start is not None:
                on_start(task.video_id)
            t0 = time.perf_counter()
            try:
                yield handler.handle(task, on_frames or (lambda n: None))
            except Exception as exc:
                log.debug("%s failed", task.video_id, exc_info=True)
                yield VideoOutcome(task.video_id, ok=False, error=error_line(exc), seconds=time.perf_counter() - t0)
        return
    with IsolatedWorker(LocalVideoHandler(spec), stall_timeout_s=stall_timeout_s) as worker:
        worker.start()
        for task in tasks:
            if on_start is not None:
                on_start(task.video_id)
            t0 = time.perf_counter()
            try:
                yield worker.call(task, on_beat=on_frames, total_timeout_s=video_timeout_s)
            except WorkerError as exc:
                remote_tb = getattr(exc, "remote_traceback", "")
                if remote_tb:
                    log.debug("%s failed in the worker:\n%s", task.video_id, remote_tb)
                yield VideoOutcome(task.video_id, ok=False, error=str(exc), seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------- options
@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    runner: "local" (one supervised worker process) or "ray".
    max_attempts: starts per video before it stays failed (interrupted starts count).
    strict: stop at the first failed video (clinical runs); exit code 3.
    stall_timeout_s / video_timeout_s: fail a video with no progress / taking too long.
    isolate: local runner only: False runs in-process (no timeouts).
    address: Ray cluster address (None: start a local one); ray_workers: frame actors (None: as
    many as the cluster holds);
    ray_gpus_per_worker: GPUs each frame actor asks for (None: what the frame stages declare);
    videos_per_pass: videos per Ray Data execution (see :class:`~hmrflow.pipeline.runner_ray.RayRunner`).
    run_name: prefix of the run id (reports folder).
    """

    runner: str = "local"
    max_attempts: int = 3
    strict: bool = False
    stall_timeout_s: float = 600.0
    video_timeout_s: float | None = None
    isolate: bool = True
    address: str | None = None
    ray_workers: int | None = None
    ray_num_cpus: int | None = None
    ray_gpus_per_worker: float | None = None
    videos_per_pass: int = 256
    run_name: str = "batch"
    progress: bool = True
    qc: bool = True


@dataclass
class BatchSummary:
    """What a batch run did (also stored in the ledger's ``runs`` table)."""

    run_id: str
    out_dir: str
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    given_up: int = 0
    not_started: int = 0
    frames: int = 0
    people: int = 0
    tracks: int = 0
    wall_s: float = 0.0
    strict_stop: bool = False
    failures: dict[str, str] = field(default_factory=dict)
    report_dir: str = ""

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.strict_stop:
            return EXIT_STRICT
        return EXIT_FAILED if (self.failed or self.given_up) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["frames_per_s"] = round(self.frames_per_s, 3)
        d["exit_code"] = self.exit_code
        return d

    def table(self) -> str:
        """Human summary: counts, throughput and the failures with their reasons."""
        lines = [
            f"run {self.run_id} -> {self.out_dir}",
            f"  videos     {self.total:6d}   done {self.done}  failed {self.failed}  "
            f"skipped (already done) {self.skipped}  gave up (attempts used) {self.given_up}"
            + (f"  not started {self.not_started}" if self.not_started else ""),
            f"  frames     {self.frames:6d}   {self.frames_per_s:.1f} frames/s over {self.wall_s:.1f} s",
            f"  people     {self.people:6d}   tracks {self.tracks}",
        ]
        if self.failures:
            lines.append(f"  failed videos ({len(self.failures)}):")
            for vid, err in sorted(self.failures.items()):
                lines.append(f"    {vid}: {err}")
        if self.strict_stop:
            lines.append("  STRICT: stopped at the first failure; remaining videos were not started")
        if self.report_dir:
            lines.append(f"  QC report  {self.report_dir}")
        return "\n".join(lines)


def make_run_id(name: str) -> str:
    """``<name>-YYYYmmddTHHMMSSZ-<pid>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{os.getpid()}"


# ------------------------------------------------------------------- the job
def run_batch(
    inputs: Sequence[InputVideo],
    spec: PipelineSpec,
    out_dir: str | os.PathLike[str],
    options: BatchOptions = BatchOptions(),
    job_hash: str | None = None,
) -> BatchSummary:
    """Run a resumable batch over ``inputs`` into ``out_dir`` (see module docstring).

    job_hash: the ledger's config hash (default: hash of ``spec.config``); a change requeues
        videos that were done with another config.
    Raises LockHeld when another job holds ``out_dir``; WorkerSetupError when the stages
    cannot be set up (rows stay queued for the next run).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_id = make_run_id(options.run_name)
    chash = job_hash or config_hash(spec.config)
    summary = BatchSummary(run_id=run_id, out_dir=str(out), total=len(inputs))
    with JobLock(lock_path(out), what=run_id), Ledger(ledger_path(out)) as ledger:
        removed = remove_stale_temps(out, older_than_s=0.0)
        if removed:
            log.info("removed %d temporaries left by an interrupted run", len(removed))
        plan = ledger.plan(
            [PlannedInput(v.video_id, v.path, v.metadata, _video_hash(chash, v)) for v in inputs],
            chash,
            options.max_attempts,
            run_id,
        )
        ledger.start_run(
            run_id,
            {
                "runner": options.runner,
                "config_hash": chash,
                "inputs": len(inputs),
                "todo": len(plan.todo),
                "strict": options.strict,
            },
        )
        summary.skipped, summary.given_up = len(plan.skipped), len(plan.given_up)
        if plan.requeued:
            log.info("%d videos requeued (interrupted, changed or retried)", len(plan.requeued))
        by_id = {v.video_id: v for v in inputs}
        job_window = _config_window(spec.config)
        tasks = [VideoTask(vid, by_id[vid].path, _task_extra(by_id[vid], job_window)) for vid in plan.todo]
        t0 = time.perf_counter()
        if tasks:
            _execute(tasks, spec, options, ledger, run_id, summary)
        summary.wall_s = time.perf_counter() - t0
        for e in ledger.entries(plan.given_up):
            summary.failures[e.video_id] = f"{e.error} (gave up after {e.attempts} attempts)"
        if options.qc:
            from hmrflow.jobs.batch.qc import build_qc, write_qc

            report = build_qc(ledger.entries([v.video_id for v in inputs]), run_id=run_id, summary=summary.to_dict())
            summary.report_dir = str(write_qc(report, job_dir(out) / REPORTS_DIR / run_id))
        ledger.finish_run(run_id, summary.to_dict())
    return summary


def _task_extra(video: InputVideo, job_window: Window) -> dict[str, Any]:
    """Per-video provenance recorded in the output manifest (only when there is some).

    ``window`` is the video's own time window over the job's: the runners hand it to the
    decode stage with the clip, and the manifest records it under ``extra.window``.
    """
    extra: dict[str, Any] = {"metadata": dict(video.metadata)} if video.metadata else {}
    window = video.window.over(job_window)
    if window.is_set:
        extra["window"] = window.record()
    return extra


def _config_window(config: Mapping[str, Any]) -> Window:
    """``decode.start``/``decode.end`` of a resolved config dict (open for custom pipelines without them)."""
    decode = config.get("decode")
    if not isinstance(decode, Mapping):
        return Window()
    return window_of(decode.get("start"), decode.get("end"))


def _video_hash(job_hash: str, video: InputVideo) -> str | None:
    """The ledger hash of a video with its own window (None: the job's): a changed window redoes it."""
    if not video.window.is_set:
        return None
    return config_hash({"config": job_hash, "window": video.window.record()})


def _execute(
    tasks: list[VideoTask],
    spec: PipelineSpec,
    options: BatchOptions,
    ledger: Ledger,
    run_id: str,
    summary: BatchSummary,
) -> None:
    """Run the tasks with the chosen runner, committing every outcome to the ledger."""
    bar_v = tqdm(total=len(tasks), desc="videos", unit="video", disable=not options.progress, position=0)
    bar_f = tqdm(desc="frames", unit="frame", disable=not options.progress, position=1)
    pending = {t.video_id for t in tasks}

    def record(o: VideoOutcome) -> bool:
        """Commit one outcome; returns False when the run must stop (strict)."""
        if o.video_id not in pending:
            log.debug("%s: duplicate outcome ignored", o.video_id)
            return True
        pending.discard(o.video_id)
        bar_v.update(1)
        if o.ok:
            if ledger.mark_done(o.video_id, run_id, o.to_dict()):
                summary.done += 1
                summary.frames += o.frames
                summary.people += o.people
                summary.tracks += o.tracks
            return True
        ledger.mark_failed(o.video_id, run_id, o.error, o.seconds)
        summary.failed += 1
        summary.failures[o.video_id] = o.error
        log.warning("%s failed: %s", o.video_id, o.error)
        if options.strict:
            summary.strict_stop = True
            return False
        return True

    try:
        if options.runner == "local":
            outcomes = run_local(
                tasks,
                spec,
                isolate=options.isolate,
                stall_timeout_s=options.stall_timeout_s,
                video_timeout_s=options.video_timeout_s,
                on_frames=bar_f.update,
                on_start=lambda vid: ledger.mark_running(vid, run_id),
            )
            for o in outcomes:
                if not record(o):
                    break
        elif options.runner == "ray":
            _execute_ray(tasks, spec, options, ledger, run_id, summary, record, pending, bar_f)
        else:
            raise ValueError(f"unknown runner {options.runner!r} (local or ray)")
    finally:
        bar_v.close()
        bar_f.close()
        # videos started but without an outcome (strict stop, interrupt) go back to the queue
        started = [e.video_id for e in ledger.entries(sorted(pending)) if e.status == "running"]
        if started:
            ledger.requeue(started, run_id, "run stopped before the video finished")
        summary.not_started = len(pending)


def _execute_ray(
    tasks: list[VideoTask],
    spec: PipelineSpec,
    options: BatchOptions,
    ledger: Ledger,
    run_id: str,
    summary: BatchSummary,
    record: Callable[[VideoOutcome], bool],
    pending: set[str],
    bar_f: Any,
) -> None:
    """Ray passes of ``videos_per_pass`` videos: a pass's videos are marked running, outcomes
    are recorded as they stream in; videos whose outcome never arrived (a pass aborted by lost
    workers) are requeued and run again, until each has used ``max_attempts`` starts."""
    from hmrflow.pipeline.runner_ray import RayRunner

    runner = RayRunner(
        spec,
        address=options.address,
        frame_workers=options.ray_workers,
        num_cpus=options.ray_num_cpus,
        isolate=options.isolate,
        stall_timeout_s=options.stall_timeout_s,
        video_timeout_s=options.video_timeout_s,
        gpus_per_worker=options.ray_gpus_per_worker,
        videos_per_pass=len(tasks),  # passes are cut here, so each runner.run() is one pass
    )
    per_pass = max(1, options.videos_per_pass)
    for start in range(0, len(tasks), per_pass):
        remaining = tasks[start : start + per_pass]
        while remaining:
            for t in remaining:
                ledger.mark_running(t.video_id, run_id)
            try:
                for o in runner.run(remaining):
                    bar_f.update(o.frames)
                    if not record(o):
                        return
            except Exception as exc:  # a pass can die with its workers: the ledger knows what is left
                log.warning("Ray pass ended early (%s)", error_line(exc))
            lost = ledger.entries([t.video_id for t in remaining if t.video_id in pending])
            retry = []
            for e in lost:
                if e.attempts >= options.max_attempts:
                    msg = f"lost {e.attempts} times (worker died or pass aborted)"
                    ledger.mark_failed(e.video_id, run_id, msg)
                    pending.discard(e.video_id)
                    summary.failed += 1
                    summary.failures[e.video_id] = msg
                    if options.strict:
                        summary.strict_stop = True
                        return
                else:
                    retry.append(e.video_id)
            if retry:
                ledger.requeue(retry, run_id, "outcome lost (worker died); retrying")
                log.warning("retrying %d videos whose results were lost", len(retry))
            remaining = [t for t in remaining if t.video_id in set(retry)]
