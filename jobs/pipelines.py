"""The stage factory dict: which stage classes make up hmrflow's pipeline, built from a config.

:data:`STAGE_FACTORIES` maps each part of a run to ``fn(cfg, out_root) -> stage`` where
``cfg`` is the resolved :class:`~hmrflow.pipeline.config.PipelineConfig` (each factory
passes only its own section to the stage).  The model stages plug in with one line each in
:data:`MODEL_STAGES` (e.g. ``"detect": lambda cfg, out: DetectStage(cfg.detect),``).
:func:`build_spec` turns the dict into the :class:`~hmrflow.pipeline.assembly.PipelineSpec`
that both the LocalRunner and the Ray runner execute.

``pipeline="module:function"`` replaces the whole dict with a user function
``(cfg, out_root) -> PipelineSpec`` (custom or test stages; ``hmrflow batch --pipeline``).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from hmrflow.pipeline.assembly import PipelineSpec, spec_from_factories
from hmrflow.pipeline.config import PipelineConfig
from hmrflow.pipeline.errors import ConfigError, HmrflowError
from hmrflow.pipeline.types import ClipRef

StageFn = Callable[[PipelineConfig, Path], Any]
log = logging.getLogger(__name__)


def _detect_stage(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.detect.stage import DetectStage

    return DetectStage(cfg.detect)


def _estimate_stage(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.mesh.stage import EstimateStage

    return EstimateStage(cfg.estimate, cfg.body_model)


def _refine_stage(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.mesh.stage import estimator_feature_id
    from hmrflow.stages.refine.stage import RefineStage

    # the one-stage path carries no crop-estimator image features
    source = None if cfg.detect.kind == "onestage" else estimator_feature_id(cfg.estimate)
    return RefineStage(cfg.refine, seed=cfg.seed, feature_source=source)


#: Model stages: part name -> factory (imports lazily so the CLI starts fast).
MODEL_STAGES: dict[str, StageFn | None] = {
    "detect": _detect_stage,
    "estimate": _estimate_stage,
    "refine": _refine_stage,
}


def probe_clip(path: str, video_id: str) -> ClipRef:
    """Probe ``path`` (one-line :class:`VideoDecodeError` for bad files) into a ClipRef."""
    from hmrflow.stages.video_probe import probe_video, to_clip_ref

    return to_clip_ref(probe_video(path), video_id)


def _model(name: str) -> StageFn:
    fn = MODEL_STAGES.get(name)
    if fn is None:
        raise HmrflowError(
            f"the {name!r} stage is not available in this installation "
            f"(hmrflow.jobs.pipelines.MODEL_STAGES[{name!r}] is empty); use --pipeline module:function for custom stages"
        )
    return fn


def _decode(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.decode import DecodeStage

    return DecodeStage(cfg.decode)


def _frame_stages(cfg: PipelineConfig, out: Path) -> list[Any]:
    from hmrflow.stages.camera.observe import CameraObserver

    if cfg.detect.kind == "onestage":
        # one network detects and estimates; the estimate slot passes its table on
        from hmrflow.stages.onestage.stage import OneStageEstimates, OneStageStage

        return [
            OneStageStage(cfg.detect, cfg.estimate, cfg.body_model),
            CameraObserver(cfg.camera),
            OneStageEstimates(),
        ]
    return [_model("detect")(cfg, out), CameraObserver(cfg.camera), _model("estimate")(cfg, out)]


def _track(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.track.tracker import TrackStage

    return TrackStage(cfg.track)


def _to_sequences(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.track.sequences import tracks_to_sequences

    return tracks_to_sequences


def _refine(cfg: PipelineConfig, out: Path) -> Any:
    return _model("refine")(cfg, out) if cfg.refine.enabled else None


def _world(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.camera.world import WorldStage

    return WorldStage(cfg.camera, cfg.body_model)


def model_files(cfg: PipelineConfig) -> dict[str, str]:
    """The weights files and body model a run with ``cfg`` uses: name -> path (or an id).

    The write stage hashes each into the manifest's ``models`` (sha256 of a file, or of every
    file of a folder), so an output says exactly which weights made it.
    """
    from hmrflow.stages.camera.fov import bundled_fov_path
    from hmrflow.stages.mesh.checkpoint import bundled_weights_path

    models: dict[str, str] = {}
    if cfg.detect.kind == "bundled":
        from hmrflow.stages.detect.stage import bundled_weights_path as detector_path

        models["detector"] = str(cfg.detect.weights or detector_path())
    elif cfg.detect.kind == "file" and cfg.detect.detections_path:
        models["detections"] = str(cfg.detect.detections_path)
    elif cfg.detect.kind == "onnx" and cfg.detect.onnx_path:
        models["detector"] = str(cfg.detect.onnx_path)
    elif cfg.detect.kind == "onestage":
        from hmrflow.stages.onestage.stage import onestage_weights_path

        models["onestage"] = str(onestage_weights_path(cfg.detect))
    elif cfg.detect.kind == "hog":
        import cv2

        # the SVM ships inside OpenCV: its version names it
        models["detector"] = f"opencv-{cv2.__version__}-hog-default-people"
    else:
        models["detector"] = str(cfg.detect.weights or "torchvision-maskrcnn_resnet50_fpn")
    if cfg.detect.kind != "onestage":
        models["estimator"] = str(
            cfg.estimate.weights or bundled_weights_path(cfg.estimate.size, cfg.estimate.eclm, head=cfg.estimate.head)
        )
    if cfg.refine.enabled:
        from hmrflow.priors.motion_diffusion import BUNDLED_PRIOR

        models["motion_prior"] = str(cfg.refine.weights or BUNDLED_PRIOR)
    if cfg.camera.world or (cfg.camera.fov == "estimate" and not cfg.camera.has_intrinsics):
        models["camera_network"] = str(cfg.camera.fov_weights or bundled_fov_path())
    if cfg.body_model.kind == "smpl":
        from hmrflow.priors.body_model import find_smpl_file

        models["body_model"] = str(find_smpl_file(cfg.body_model.path, cfg.body_model.gender))
    else:
        from hmrflow.priors.body_model import load_body_model

        models["body_model"] = load_body_model("synthetic").sha256
    return models


def _write(cfg: PipelineConfig, out: Path) -> Any:
    from hmrflow.stages.detect.stage import detector_notes
    from hmrflow.stages.write import WriteStage

    return WriteStage(cfg.write, out, models=model_files(cfg), notes=detector_notes(cfg.detect))


#: Part name -> factory (see module docstring).
STAGE_FACTORIES: dict[str, StageFn] = {
    "probe": lambda cfg, out: probe_clip,
    "decode": _decode,
    "frame_stages": _frame_stages,
    "track": _track,
    "to_sequences": _to_sequences,
    "refine": _refine,
    "world": _world,
    "write": _write,
}


def load_builder(ref: str) -> Callable[[PipelineConfig, Path], PipelineSpec]:
    """The function named by ``"package.module:function"``."""
    if ":" not in ref:
        raise ConfigError(f"--pipeline {ref!r}: expected 'module:function'")
    mod_name, fn_name = ref.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"--pipeline {ref!r}: cannot import {mod_name!r} ({exc})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"--pipeline {ref!r}: {mod_name} has no function {fn_name!r}")
    return fn


def build_spec(cfg: PipelineConfig, out_root: str | Path, pipeline: str | None = None) -> PipelineSpec:
    """The :class:`PipelineSpec` of a run: from :data:`STAGE_FACTORIES`, or a custom builder."""
    if pipeline:
        spec = load_builder(pipeline)(cfg, Path(out_root))
        if not isinstance(spec, PipelineSpec):
            raise ConfigError(f"--pipeline {pipeline!r} returned {type(spec).__name__}, expected a PipelineSpec")
        return spec
    return spec_from_factories(STAGE_FACTORIES, cfg, out_root)


def run_one(video: str | Path, out_root: str | Path, cfg: Any, progress: bool = True) -> Path:
    """Run the full pipeline on one video with the LocalRunner; returns ``out_root/<video_id>``.

    A time window (``cfg.decode.start``/``end``) is checked against the probe before any
    stage is set up (one-line :class:`VideoDecodeError`) and recorded in the manifest under
    ``extra.window``.
    """
    from hmrflow.pipeline.atomic import check_output_root
    from hmrflow.pipeline.errors import VideoDecodeError
    from hmrflow.pipeline.naming import run_video_id, sanitize_video_id

    path = Path(video)
    if not path.is_file():
        raise VideoDecodeError(str(path), "no such file")
    video_id = run_video_id(path, out_root)
    # probe (the spec's probe, from the same factory) before the stages are built: a bad file
    # or a time window outside the video is a one-line error in a second, not after models load
    clip = STAGE_FACTORIES["probe"](cfg, Path(out_root))(str(path), video_id)
    extra: dict[str, Any] = {"seeds": {"pipeline": cfg.seed}}
    window = cfg.decode.window
    if window.is_set:
        window.check_fits(str(path), clip.n_frames, clip.duration_s, clip.fps)
        extra["window"] = window.record()
    spec = build_spec(cfg, out_root)
    check_output_root(out_root)
    if video_id != sanitize_video_id(path):
        log.warning(
            "%s: %s/%s holds another input's output; writing to %s/%s",
            path,
            out_root,
            sanitize_video_id(path),
            out_root,
            video_id,
        )
    runner = spec.local_runner(progress=progress)
    return runner.run(clip, extra=extra)
