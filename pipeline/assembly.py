"""Pipeline assembly: the one description of a run that both runners execute.

A :class:`PipelineSpec` names the stages of a run -- decode, frame stages (detect,
estimate, ...), track, to_sequences, refine, write -- plus the probe that turns a path into
a :class:`~hmrflow.pipeline.types.ClipRef` and the resolved config written beside every
output.  Each stage is given either as a cheap, picklable *instance* (the Stage contract:
``__init__`` loads nothing) or as a :class:`StageFactory` (a callable plus arguments, called
where the stage will run).  The LocalRunner and the Ray runner both build their stages
from the same spec, so they run the same classes with the same settings.

Building a spec from a config is the job of a plain factory dict (see
:func:`spec_from_factories`); the model stages register there with one line each.
Nothing here imports model code (``pipeline`` imports nothing else of the project).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from hmrflow.pipeline.errors import ConfigError
from hmrflow.pipeline.runner import LocalRunner
from hmrflow.pipeline.types import ClipRef, FrameBatch, SMPLSequence, TrackedEstimates

log = logging.getLogger(__name__)

#: File name of the provenance manifest inside ``OUT/<video_id>/`` (docs/FORMATS.md).
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class StageFactory:
    """A deferred stage: ``fn(*args, **kwargs)`` called where the stage runs.

    Use it for stages whose instances should not be pickled (or built) on the driver.
    ``fn`` must be importable (a module-level class or function) so the factory pickles.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """A fresh stage instance."""
        return self.fn(*self.args, **dict(self.kwargs))


def materialize(source: Any) -> Any:
    """The stage itself, or a fresh instance when ``source`` is a :class:`StageFactory`."""
    return source.build() if isinstance(source, StageFactory) else source


def default_probe(path: str, video_id: str) -> ClipRef:
    """A bare :class:`ClipRef` (no probe): for pipelines whose decode needs no clip facts."""
    return ClipRef(video_id=video_id, path=str(path))


@dataclass(frozen=True)
class BuiltStages:
    """Concrete stage objects of one worker (see :meth:`PipelineSpec.build`)."""

    probe: Callable[[str, str], ClipRef]
    decode: Any
    frame_stages: tuple[Any, ...]
    track: Any
    to_sequences: Callable[[TrackedEstimates], list[SMPLSequence]]
    refine: Any | None
    write: Any
    world: Any | None = None

    def frame_part(self) -> list[Any]:
        """Stages that see frames (run fused, where the frames are decoded)."""
        return [self.decode, *self.frame_stages]

    def video_part(self) -> list[Any]:
        """Stages that see one whole video's small tables."""
        return [s for s in (self.track, self.refine, self.world, self.write) if s is not None]


@dataclass(frozen=True)
class PipelineSpec:
    """Everything needed to run the pipeline on videos, in a picklable form.

    probe: ``(path, video_id) -> ClipRef`` (a module-level function).
    decode: ``ClipRef -> Iterator[FrameBatch]``.
    frame_stages: applied in order to each FrameBatch; the last returns MeshEstimates.
    track: ``MeshEstimates -> TrackedEstimates`` over a whole video.
    to_sequences: ``TrackedEstimates -> list[SMPLSequence]`` (module-level function).
    write: ``VideoResult -> Path`` (writes ``OUT/<video_id>/``).
    refine: ``SMPLSequence -> SMPLSequence`` per track, or None.
    world: ``(sequences, camera, clip) -> WorldResult`` (final camera and world frame,
        :class:`~hmrflow.stages.camera.world.WorldStage`), or None (working camera only).
    config: the resolved config (``PipelineConfig.resolved_dict()``) recorded as provenance.
    Each stage entry is an instance or a :class:`StageFactory`.
    """

    decode: Any
    frame_stages: tuple[Any, ...]
    track: Any
    to_sequences: Callable[[TrackedEstimates], list[SMPLSequence]]
    write: Any
    refine: Any | None = None
    world: Any | None = None
    probe: Callable[[str, str], ClipRef] = default_probe
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_stages", tuple(self.frame_stages))

    def build(self) -> BuiltStages:
        """Instantiate factories (instances are used as given)."""
        return BuiltStages(
            probe=self.probe,
            decode=materialize(self.decode),
            frame_stages=tuple(materialize(s) for s in self.frame_stages),
            track=materialize(self.track),
            to_sequences=self.to_sequences,
            refine=materialize(self.refine) if self.refine is not None else None,
            write=materialize(self.write),
            world=materialize(self.world) if self.world is not None else None,
        )

    def local_runner(self, progress: bool = False, built: BuiltStages | None = None) -> LocalRunner:
        """A :class:`LocalRunner` over this spec's stages (setup happens on first run)."""
        b = built or self.build()
        return LocalRunner(
            decode=b.decode,
            frame_stages=list(b.frame_stages),
            track=b.track,
            to_sequences=b.to_sequences,
            write=b.write,
            refine=b.refine,
            world=b.world,
            config=dict(self.config),
            progress=progress,
        )

    def replace(self, **changes: Any) -> "PipelineSpec":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------- stage helpers
def setup_stage(stage: Any) -> None:
    """Call ``setup()`` if the stage has one."""
    fn = getattr(stage, "setup", None)
    if callable(fn):
        fn()


def needs_actor(stage: Any) -> bool:
    """Whether a Ray worker should keep ``stage`` alive (it has a setup or needs GPUs).

    Stages that are not :class:`~hmrflow.pipeline.stage.BaseStage` are kept as actors
    when they define ``setup`` (the safe choice).
    """
    fn = getattr(stage, "needs_actor", None)
    if callable(fn):
        return bool(fn())
    return callable(getattr(stage, "setup", None))


def stage_gpus(stage: Any) -> float:
    """Share of one GPU a worker of ``stage`` declares for running on a GPU (0 when undeclared)."""
    res = getattr(stage, "resources", None)
    return float(getattr(res, "gpus", 0.0) or 0.0)


def stage_cpus(stage: Any) -> float:
    """CPUs one worker of ``stage`` declares (``resources.cpus``; 1 when undeclared)."""
    res = getattr(stage, "resources", None)
    return float(getattr(res, "cpus", 1.0) or 1.0)


def stage_device(stage: Any) -> str | None:
    """The device ``stage`` is configured for (None: it runs no model)."""
    fn = getattr(stage, "device_setting", None)
    return fn() if callable(fn) else None


def wants_gpu(device: str | None, cluster_gpus: float) -> bool:
    """Whether a stage configured for ``device`` should be given a GPU on a cluster with
    ``cluster_gpus`` GPUs: ``cuda``/``cuda:N`` always (ConfigError when there is none), ``auto``
    when the cluster has any, ``cpu`` and model-free stages never."""
    if device is None or device == "cpu":
        return False
    if device == "auto":
        return cluster_gpus > 0
    if cluster_gpus <= 0:
        raise ConfigError(
            f"a stage is set to device {device!r} but the Ray cluster has no GPUs "
            "(set device=auto or cpu, or add GPU workers)"
        )
    return True


@dataclass(frozen=True)
class OperatorResources:
    """What each worker of one Ray operator asks for: CPUs, GPUs (a fraction shares a GPU) and
    whether it is an actor (kept alive: weights or GPUs) or a task."""

    cpus: float
    gpus: float
    actor: bool


@dataclass(frozen=True)
class ResourcePlan:
    """The Ray requests of a run: the frame operator (decode + detect + estimate, and the rest of
    the pipeline too when ``fused``) and the finishing operator (track + refine + write), with
    the number of workers of each."""

    frame: OperatorResources
    finish: OperatorResources
    frame_workers: int = 1
    finish_workers: int = 1
    fused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_resources(
    built: BuiltStages,
    cluster_gpus: float,
    frame_workers: int | None = 1,
    finish_workers: int = 1,
    gpus_per_worker: float | None = None,
    cluster_cpus: float = 1.0,
) -> ResourcePlan:
    """What each Ray worker asks for, from the stages' declarations and their configured devices.

    * Frame workers (decode and the frame stages run fused in one actor): CPUs = the most any of
      its stages declares (they run one after another); GPUs = ``gpus_per_worker`` when given,
      else the sum of the GPU shares of the stages that want a GPU (:func:`wants_gpu`), at most 1.
    * Finish workers: CPUs likewise; GPUs = the refine stage's share when it wants a GPU and
      the cluster has that much left after the frame workers' requests.  A refine stage on
      ``auto`` without room runs on the CPU of its worker; one set to ``cuda`` without room is a
      ConfigError (the job would wait for a GPU forever).
    * No stage on a GPU (a CPU-only cluster, or ``device=cpu``): the plan is ``fused``, each
      worker takes whole videos (frames, tracking, refinement, writing) and only outcomes leave
      it; nothing is asked of GPUs.
    * ``frame_workers`` None: as many as the cluster holds (its GPUs over the GPU request, or
      its CPUs over the CPU request when no GPU is asked for).
    """
    frame_stages = built.frame_part()
    frame_share = sum(stage_gpus(s) for s in frame_stages if wants_gpu(stage_device(s), cluster_gpus))
    if gpus_per_worker is not None:
        if gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        if gpus_per_worker > 0 and cluster_gpus <= 0:
            raise ConfigError(f"--gpus-per-worker {gpus_per_worker} asked for, but the Ray cluster has no GPUs")
        frame_gpus = float(gpus_per_worker)
    else:
        frame_gpus = min(1.0, frame_share)
    frame_cpus = max([stage_cpus(s) for s in frame_stages] or [1.0])
    if frame_workers is None:
        frame_workers = int(cluster_gpus // frame_gpus) if frame_gpus > 0 else int(cluster_cpus // frame_cpus)
        frame_workers = max(1, frame_workers)
    if frame_workers * frame_gpus > cluster_gpus + 1e-9:
        raise ConfigError(
            f"{frame_workers} frame workers x {frame_gpus:g} GPU need more than the cluster's "
            f"{cluster_gpus:g} GPU(s); lower --workers or --gpus-per-worker"
        )
    frame = OperatorResources(cpus=frame_cpus, gpus=frame_gpus, actor=True)
    video = built.video_part()
    left = cluster_gpus - frame_workers * frame_gpus
    finish_gpus = 0.0
    for s in video:
        dev = stage_device(s)
        if not wants_gpu(dev, cluster_gpus):
            continue
        share = stage_gpus(s)
        if finish_workers * share <= left + 1e-9:
            finish_gpus = max(finish_gpus, share)
        elif dev != "auto":
            raise ConfigError(
                f"a video stage is set to device {dev!r}, but the frame workers take the cluster's GPUs "
                f"({frame_workers} x {frame_gpus:g} of {cluster_gpus:g}); lower --gpus-per-worker"
            )
    finish = OperatorResources(
        cpus=max([stage_cpus(s) for s in video] or [1.0]),
        gpus=finish_gpus,
        actor=finish_gpus > 0 or any(needs_actor(s) for s in video),
    )
    return ResourcePlan(frame, finish, frame_workers, finish_workers, fused=frame_gpus == 0 and finish_gpus == 0)


class HeartbeatDecode:
    """Wraps a decode stage so every delivered :class:`FrameBatch` calls ``beat(n_frames)``.

    Used by supervised workers: a decoder that stops delivering frames stops the beats,
    and the supervisor kills it after its stall timeout.  Everything else is delegated.
    """

    def __init__(self, decode: Any, beat: Callable[[int], None]) -> None:
        self.inner = decode
        self.beat = beat
        self.resources = getattr(decode, "resources", None)

    def setup(self) -> None:
        setup_stage(self.inner)

    def __call__(self, clip: ClipRef) -> Iterator[FrameBatch]:
        for batch in self.inner(clip):
            self.beat(len(batch))
            yield batch


# ------------------------------------------------------------------ task and outcome
@dataclass(frozen=True)
class VideoTask:
    """One video to process: its id, path and per-video metadata carried into the output.

    extra: JSON-able values recorded in the output manifest (e.g. ``{"metadata": {...}}``
    from a CSV manifest's extra columns).
    """

    video_id: str
    path: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoOutcome:
    """What happened to one video, as both runners report it to the batch job.

    ok: True when the output folder was written.  error: one line when not ok.
    frames: frames decoded; tracks/rows/observed/filled: from the written manifest;
    people: most tracks present in one frame; seconds: wall time of the video;
    peak_rss_mb: peak resident memory of the worker process that ran it (0 = unknown).
    """

    video_id: str
    ok: bool
    error: str = ""
    output: str = ""
    frames: int = 0
    tracks: int = 0
    people: int = 0
    rows: int = 0
    observed: int = 0
    filled: int = 0
    seconds: float = 0.0
    input_sha256: str = ""
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``OUT/<video_id>/manifest.json`` as a dict, or None when absent/unreadable."""
    p = Path(out_dir) / MANIFEST_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def max_concurrent_tracks(tracks: Sequence[Mapping[str, Any]]) -> int:
    """Most tracks alive at once, from the manifest's per-track first/last frames."""
    events: list[tuple[int, int]] = []
    for t in tracks:
        if t.get("first_frame") is None or t.get("last_frame") is None:
            continue
        events.append((int(t["first_frame"]), 1))
        events.append((int(t["last_frame"]) + 1, -1))
    best = cur = 0
    for _, d in sorted(events):
        cur += d
        best = max(best, cur)
    return best


def outcome_from_output(video_id: str, out: Any, frames: int, seconds: float, peak_rss_mb: float = 0.0) -> VideoOutcome:
    """A successful :class:`VideoOutcome`, counts read back from the written manifest."""
    out_dir = str(out) if out is not None else ""
    man = read_manifest(out_dir) if out_dir else None
    counts = (man or {}).get("counts", {})
    return VideoOutcome(
        video_id=video_id,
        ok=True,
        output=out_dir,
        frames=int(counts.get("frames_decoded", frames)),
        tracks=int(counts.get("tracks", 0)),
        people=max_concurrent_tracks((man or {}).get("tracks", [])),
        rows=int(counts.get("rows", 0)),
        observed=int(counts.get("observed", 0)),
        filled=int(counts.get("filled", 0)),
        seconds=float(seconds),
        input_sha256=str(((man or {}).get("input") or {}).get("sha256") or ""),
        peak_rss_mb=float(peak_rss_mb),
    )


def error_line(exc: BaseException) -> str:
    """One line naming the error: ``Type: message`` (first line only)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------ spec factories
#: A factory dict maps a part name to ``fn(cfg, out_root) -> stage`` (or None = absent).
#: Keys: "probe" (returns the probe function), "decode", "frame_stages" (returns a list),
#: "track", "to_sequences" (returns the function), "refine", "world", "write".
FactoryDict = Mapping[str, Callable[[Any, Path], Any] | None]


def spec_from_factories(factories: FactoryDict, cfg: Any, out_root: str | os.PathLike[str]) -> PipelineSpec:
    """Build a :class:`PipelineSpec` by calling each factory with ``(cfg, out_root)``.

    ``cfg`` is the resolved ``PipelineConfig`` (the factories pick the sections their stage
    needs); the spec's ``config`` is ``cfg.resolved_dict()``.  A missing or None factory
    for "refine" means no refinement, for "world" no world frame; every other part is required.
    """
    out = Path(out_root)
    required = ("decode", "frame_stages", "track", "to_sequences", "write")
    missing = [k for k in required if factories.get(k) is None]
    if missing:
        raise KeyError(f"stage factories missing: {', '.join(missing)}")

    def call(name: str) -> Any:
        fn = factories.get(name)
        return fn(cfg, out) if fn is not None else None

    probe = call("probe") or default_probe
    config = cfg.resolved_dict() if hasattr(cfg, "resolved_dict") else dict(cfg or {})
    return PipelineSpec(
        probe=probe,
        decode=call("decode"),
        frame_stages=tuple(call("frame_stages") or ()),
        track=call("track"),
        to_sequences=call("to_sequences"),
        refine=call("refine"),
        world=call("world"),
        write=call("write"),
        config=config,
    )
