"""Typed, strict configuration.

YAML lives at the edges (``configs/*.yaml`` presets, user files, ``--set key=value``
overrides); inside, everything is a frozen pydantic model that rejects unknown keys and
wrong types with an error naming the key.  Presets are flat overrides of the defaults
declared here (no ``_base_`` chains).  Modules receive the one section they need, never
the whole tree.  ``resolved_dict()`` is what gets written beside every output.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hmrflow.pipeline.devices import check_device_string
from hmrflow.pipeline.errors import ConfigError
from hmrflow.pipeline.window import TimePointError, Window, canonical, window_of


class Strict(BaseModel):
    """Base: frozen, unknown keys rejected, no silent type coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class DecodeConfig(Strict):
    """How videos are read (see :mod:`hmrflow.stages.decode`)."""

    backend: Literal["av", "decord", "auto"] = "av"
    batch_size: int = Field(16, ge=1, le=4096, description="frames per FrameBatch")
    target_fps: Optional[float] = Field(None, gt=0, description="subsample by timestamps to this rate")
    max_side: Optional[int] = Field(None, ge=16, description="resize so the longer side is at most this")
    allow_truncated: bool = Field(True, description="yield the readable frames of a damaged file with a warning")
    max_pixels: int = Field(8192 * 8192, ge=1, description="refuse frames larger than this (absurd sizes)")
    max_frames: Optional[int] = Field(
        None, ge=1, description="stop after this many (output) frames, counted from the window's start"
    )
    start: Optional[str] = Field(
        None,
        description="time window start: seconds (12.5 or 12.5s) or a frame number (300f); frames before it are "
        "not decoded; outputs keep the video's own frame indices and timestamps (hmrflow.pipeline.window)",
    )
    end: Optional[str] = Field(
        None, description="time window end (exclusive: frames with t < end), same forms as start; None = to the end"
    )
    decord_timeout_s: float = Field(60.0, gt=0, description="kill the decord fast path after this long")
    threads: int = Field(1, ge=0, le=64, description="decoder threads (0 = FFmpeg's choice)")
    prefetch: int = Field(
        2, ge=0, le=16, description="frame batches decoded ahead in a thread while the others work (0 = in line)"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_point(cls, v: Any, info: ValidationInfo) -> Optional[str]:
        # YAML gives 12.5 as a float and 300f as a string: both are kept as canonical text
        try:
            return canonical(v, f"decode.{info.field_name}")
        except TimePointError as exc:
            raise ValueError(exc.reason) from None

    @property
    def window(self) -> Window:
        """The configured time window (open sides are None)."""
        return window_of(self.start, self.end)


class BodyModelConfig(Strict):
    """Which body model: the bundled synthetic one, or the user's SMPL files."""

    kind: Literal["synthetic", "smpl"] = "synthetic"
    path: Optional[str] = Field(
        None, description="folder with SMPL_{NEUTRAL,MALE,FEMALE}.pkl or one .pkl file; env HMRFLOW_SMPL_DIR"
    )
    gender: Literal["neutral", "male", "female"] = "neutral"


class DetectConfig(Strict):
    """Person detection (see :mod:`hmrflow.stages.detect`)."""

    kind: Literal["bundled", "file", "maskrcnn", "onnx", "hog", "onestage"] = Field(
        "bundled",
        description="onestage: the SAT-HMR one-stage estimator detects and estimates every person of the "
        "whole frame at once (replaces detect + estimate; its weights are onestage_weights)",
    )
    weights: Optional[str] = None
    onestage_weights: Optional[str] = Field(
        None, description="for kind=onestage: weights file (default: the bundled onestage_tiny.safetensors)"
    )
    onestage_tokens: Literal["adaptive", "all_low", "all_high", "discard_background"] = Field(
        "adaptive",
        description="for kind=onestage: scale-adaptive tokens, or the ablations (every token at low or at high "
        "resolution, background tokens dropped)",
    )
    detections_path: Optional[str] = Field(None, description="for kind=file: MOT txt or JSON boxes")
    onnx_path: Optional[str] = Field(None, description="for kind=onnx: a YOLO-style ONNX detector or segmenter")
    onnx_layout: Literal["auto", "yolov8", "yolov5", "end2end"] = Field(
        "auto", description="for kind=onnx: output layout (auto tells them apart for 80-class or 1-class models)"
    )
    onnx_person_class: int = Field(0, ge=0, description="for kind=onnx: class index of 'person' (0 in COCO YOLO)")
    onnx_input_size: int = Field(
        640, ge=32, le=4096, description="for kind=onnx: input side when the model's height and width are dynamic"
    )
    hog_scale: float = Field(
        1.0, gt=0.0, le=4.0, description="for kind=hog: scan frames at this scale (>1 finds smaller people, slower)"
    )
    nms_iou: float = Field(
        0.7, gt=0.0, le=1.0, description="boxes overlapping a stronger one more than this are dropped"
    )
    masks: Literal["person", "box"] = Field(
        "person", description="box: each detection's mask is its whole box (as HOG and box files give)"
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    batch_size: int = Field(16, ge=1)
    device: Optional[str] = Field(None, description="auto, cpu, cuda or cuda:N; unset = the top-level device")


class EstimateConfig(Strict):
    """ViT mesh estimator (see :mod:`hmrflow.stages.mesh`)."""

    size: Literal["tiny", "small", "base", "large", "huge"] = "tiny"
    head: Literal["smpl", "fastmetro"] = Field(
        "smpl",
        description="smpl: HMR2.0's one-query SMPL decoder; fastmetro: FastMETRO's mesh encoder-decoder "
        "with an SMPL readout (bundled estimator_<size>_fastmetro.safetensors when weights is unset)",
    )
    vertices: bool = Field(
        False, description="fastmetro: keep each row's predicted mesh and write it per track (npz 'vertices')"
    )
    mesh_fit_steps: int = Field(
        0, ge=0, le=200, description="fastmetro: Adam steps fitting the SMPL readout to the predicted mesh (0 = off)"
    )
    weights: Optional[str] = None
    batch_size: int = Field(64, ge=1)
    device: Optional[str] = Field(None, description="auto, cpu, cuda or cuda:N; unset = the top-level device")
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    eclm: bool = Field(
        False,
        description="layer-merged ViT (ECLM): with weights unset, load the bundled "
        "estimator_<size>_eclm.safetensors; with weights set, they must be a merged checkpoint written by "
        "`hmrflow accelerate` (a merged checkpoint in weights is detected by its header and used either way)",
    )
    tome_r: Union[NonNegativeInt, list[NonNegativeInt]] = Field(
        0,
        description="Mask-ToMe: background tokens merged per ViT block (0 = off), or a list of per-block merge "
        "counts (schedule 'list', e.g. [14, 7, 4]); person tokens are never merged",
    )
    tome_schedule: Literal["constant", "decreasing", "list"] = Field(
        "constant",
        description="Mask-ToMe merges per block: tome_r in every block, linear 2*tome_r -> 0 (same total), "
        "or tome_r as a per-block list (set automatically when tome_r is a list)",
    )
    tome_group_size: int = Field(
        16, ge=0, description="Mask-ToMe: run chunks as sub-batches of this many crops of similar person size (0 = off)"
    )
    image_size: Optional[tuple[int, int]] = Field(
        None, description="crop (H, W) of the ViT; None = from the weights' header, else 256x192"
    )
    crop_rescale: float = Field(1.2, gt=0.5, le=3.0, description="context factor applied to detector boxes")
    focal_px: Optional[float] = Field(None, gt=0, description="known focal length in pixels; None = focal_default")
    focal_default: Literal["diagonal", "hmr2"] = Field(
        "diagonal", description="focal when unknown: diagonal = sqrt(W^2+H^2); hmr2 = 5000/256*max(W,H)"
    )

    @model_validator(mode="after")
    def _mesh_options_need_fastmetro(self) -> "EstimateConfig":
        if self.head != "fastmetro" and (self.vertices or self.mesh_fit_steps):
            raise ValueError("estimate.vertices and estimate.mesh_fit_steps need estimate.head: fastmetro")
        return self

    @model_validator(mode="after")
    def _tome_schedule_follows_tome_r(self) -> "EstimateConfig":
        # value ranges are in the field types; the stage's MaskToMeConfig checks the rest
        if isinstance(self.tome_r, list):
            object.__setattr__(self, "tome_schedule", "list")
        elif self.tome_schedule == "list":
            raise ValueError("tome_schedule 'list' needs tome_r as a list of per-block merge counts")
        return self

    @property
    def tome_enabled(self) -> bool:
        """True when Mask-ToMe merges anything."""
        return any(v > 0 for v in self.tome_r) if isinstance(self.tome_r, list) else self.tome_r > 0


class TrackConfig(Strict):
    """Identity tracking (see :mod:`hmrflow.stages.track`).

    Defaults of ``lost_after_s``, ``box_noise_rel`` and ``w_pose`` were set on the real
    estimator's output (rendered tuning clips, seeds 7000-7007, disjoint from the
    benchmark sets): its boxes jitter ~4 % of their height per frame and people crossing
    are often merged into one box for 0.2-1 s, so a track keeps its motion cost for 1 s
    and the joint-angle cue weighs more.  Its betas differ little between people (the
    spread within a person is ~3x that between people): they only break near-ties.
    """

    reid_window_s: float = Field(2.0, ge=0.0, description="keep lost tracks this long for re-identification")
    min_track_s: float = Field(
        0.3, ge=0.0, description="drop tracks seen for less than this: spanning less, or with fewer observed frames"
    )
    confirm_hits: int = Field(3, ge=1, description="hits that turn a tentative track into a confirmed one")
    lost_after_s: float = Field(
        1.0, gt=0.0, description="a track unseen this long is matched only by re-identification (shape + position)"
    )
    tentative_max_miss_s: float = Field(0.3, ge=0.0, description="discard an unconfirmed track unseen this long")
    accel_std: float = Field(
        3.0, gt=0.0, description="root Kalman filter: sqrt of the white acceleration spectral density, m/s^1.5"
    )
    pos_noise_m: float = Field(0.05, gt=0.0, description="root measurement noise across the viewing ray, m")
    depth_noise_rel: float = Field(0.08, gt=0.0, description="root noise along the ray, fraction of the distance")
    box_accel_rel: float = Field(3.0, gt=0.0, description="box Kalman filter: same, in box heights/s^1.5")
    box_noise_rel: float = Field(0.1, gt=0.0, description="box measurement noise, fraction of the box height")
    shape_noise: float = Field(0.5, gt=0.0, description="std of one beta between two estimates of one person")
    pose_noise_rad: float = Field(0.3, gt=0.0, description="typical mean joint angle between nearby estimates")
    gate_chi2: float = Field(16.3, gt=0.0, description="Mahalanobis gate on the root (chi-square, 3 dof)")
    reid_shape_gate: float = Field(4.0, gt=0.0, description="re-identification: max mean squared z-score of betas")
    w_iou: float = Field(2.0, ge=0.0, description="cost weight of 1 - IoU(predicted box, box)")
    w_pos: float = Field(1.0, ge=0.0, description="cost weight of the root Mahalanobis distance")
    w_box: float = Field(0.5, ge=0.0, description="cost weight of the box Mahalanobis distance")
    w_shape: float = Field(1.0, ge=0.0, description="cost weight of the betas distance")
    w_pose: float = Field(3.0, ge=0.0, description="cost weight of the joint-angle distance")
    max_cost: float = Field(12.0, gt=0.0, description="pairs costing more stay unmatched")
    w_app: float = Field(
        2.0, ge=0.0, description="cost weight of the appearance evidence (clothing colour under the mask)"
    )
    app_same: float = Field(
        0.13, gt=0.0, description="typical appearance distance of a detection to its own person's appearance"
    )
    app_other: float = Field(
        0.30, gt=0.0, description="typical appearance distance of a detection to another person's appearance"
    )
    app_gate: float = Field(
        0.35, gt=0.0, le=1.0, description="detections this far from a track's appearance never join it"
    )
    split_gap_s: float = Field(
        0.2,
        ge=0.0,
        description="a track unseen this long while touching another track starts a new tracklet when it comes "
        "back (stitching then decides who it is; 0 = never split; no splits without stitching)",
    )
    stitch_window_s: float = Field(
        5.0, ge=0.0, description="whole-video stitching: join tracklets across gaps up to this long (0 = off)"
    )
    stitch_max_cost: float = Field(8.0, gt=0.0, description="stitching: tracklet pairs costing more stay apart")


class RefineConfig(Strict):
    """Motion-prior diffusion refinement (see :mod:`hmrflow.stages.refine`)."""

    enabled: bool = True
    weights: Optional[str] = None
    window: int = Field(64, ge=4)
    overlap: int = Field(16, ge=0)
    steps: int = Field(2, ge=1, description="diffusion sampling steps (1-5 are what the prior is tuned for)")
    max_gap_s: float = Field(1.0, ge=0.0, description="fill gaps up to this long")
    sampler: Literal["ddim", "dpm"] = Field("ddim", description="few-step sampler (DDIM eta=0 or DPM-Solver++)")
    batch_windows: int = Field(64, ge=1, description="windows per denoiser batch")
    guidance_scale: float = Field(1.0, ge=0.0, description="classifier-free guidance (1 = plain conditional)")
    smooth_sigma: float = Field(2.5, ge=0.0, description="Gaussian low-pass of the refined motion, frames (0 = off)")
    use_features: bool = Field(
        True, description="condition on the estimator's image features (when the prior has them)"
    )
    refine_shape: bool = Field(
        False,
        description="refine each track's body shape from its features with the prior's shape head "
        "(off: on held-out clips it did not beat the median of the per-frame shapes, docs/bench/refinement.md)",
    )
    device: Optional[str] = Field(None, description="auto, cpu, cuda or cuda:N; unset = the top-level device")


class CameraConfig(Strict):
    """The clip's camera: intrinsics, field of view, camera motion, world frame (see docs/world.md).

    Intrinsics are in the pixels of the original video, upright (rotation metadata applied),
    whatever ``decode.max_side`` does; ``fy`` defaults to ``fx`` and the principal point to
    the image centre.  ``intrinsics`` names a JSON or YAML file with the same keys (and
    optionally ``width``/``height``, the image size they refer to); it may not be combined
    with ``fx``...
    """

    fx: Optional[float] = Field(None, gt=0, description="focal length in x, original video pixels")
    fy: Optional[float] = Field(None, gt=0, description="focal length in y (default fx)")
    cx: Optional[float] = Field(None, description="principal point x, original video pixels (default: centre)")
    cy: Optional[float] = Field(None, description="principal point y (default: centre)")
    intrinsics: Optional[str] = Field(None, description="JSON/YAML file with fx, fy, cx, cy (and width, height)")
    fov: Literal["estimate", "diagonal", "hmr2"] = Field(
        "estimate",
        description="when no intrinsics are given: estimate the field of view from the frames (a network trained "
        "on renders), or assume the diagonal (sqrt(W^2+H^2)) or HMR2.0's (5000/256*max(W,H)) focal",
    )
    fov_weights: Optional[str] = Field(None, description="field-of-view network weights (default: bundled)")
    fov_frames: int = Field(
        32, ge=1, le=1024, description="frames the field of view is estimated on, spread over the clip"
    )
    motion: Literal["estimate", "static"] = Field(
        "estimate",
        description="estimate camera rotation from the background (people masked), or assume a static camera",
    )
    motion_max_side: int = Field(320, ge=64, le=4096, description="frames are tracked at this longer side (pixels)")
    motion_stride: int = Field(
        3, ge=1, le=30, description="track every n-th frame (rotations in between are interpolated)"
    )
    world: bool = Field(True, description="gravity, ground and world-frame outputs (off: camera frame only)")
    ground_scale: bool = Field(
        False,
        description="with two or more people, rescale each track's depth so its feet stand on the ground plane "
        "all people share (depth from apparent size is off by a factor per person)",
    )
    depth_smooth_s: float = Field(
        4.0,
        ge=0.0,
        le=10.0,
        description="window (seconds) over which each track's distance along its viewing ray is smoothed: depth "
        "from apparent size is noisy from frame to frame, the direction is not (0 = off)",
    )
    depth_smooth: Literal["gaussian", "savgol"] = Field(
        "gaussian",
        description="Gaussian (sigma = window/4) around each run's straight-line trend, or a local quadratic fit "
        "(Savitzky-Golay: keeps curvature, passes more noise)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "CameraConfig":
        given = {k: getattr(self, k) for k in ("fx", "fy", "cx", "cy") if getattr(self, k) is not None}
        if self.intrinsics is not None and given:
            raise ValueError(f"camera.intrinsics and camera.{', camera.'.join(given)} are both set; give one")
        if given and self.fx is None:
            raise ValueError(f"camera.{', camera.'.join(given)} given without camera.fx")
        if self.intrinsics is not None and not Path(self.intrinsics).is_file():
            raise ValueError(f"camera.intrinsics: {self.intrinsics}: file not found")
        return self

    @property
    def has_intrinsics(self) -> bool:
        """True when the user gave the intrinsics (values or a file)."""
        return self.fx is not None or self.intrinsics is not None


class WriteConfig(Strict):
    """Outputs (see :mod:`hmrflow.stages.write`)."""

    parquet: bool = True
    npz: bool = True


#: Config sections of the stages that run models (each has a ``device``).
MODEL_SECTIONS = ("detect", "estimate", "refine")


class PipelineConfig(Strict):
    """The whole resolved configuration of one run."""

    preset: str = "clip"
    seed: int = Field(0, description="seed of the run: refinement noise is drawn from (seed, track id)")
    device: str = Field(
        "auto", description="device of every model stage (auto, cpu, cuda, cuda:N) unless a section sets its own"
    )
    decode: DecodeConfig = DecodeConfig()
    body_model: BodyModelConfig = BodyModelConfig()
    detect: DetectConfig = DetectConfig()
    estimate: EstimateConfig = EstimateConfig()
    track: TrackConfig = TrackConfig()
    refine: RefineConfig = RefineConfig()
    camera: CameraConfig = CameraConfig()
    write: WriteConfig = WriteConfig()

    @model_validator(mode="after")
    def _window_order(self) -> "PipelineConfig":
        # here rather than in DecodeConfig: a whole-config message names both keys without the section dump
        try:
            self.decode.window.check_order("decode.")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _overlap_fits(self) -> "PipelineConfig":
        if self.track.app_other <= self.track.app_same:
            raise ValueError("track.app_other must be larger than track.app_same")
        if self.refine.overlap >= self.refine.window:
            raise ValueError("refine.overlap must be smaller than refine.window")
        return self

    @model_validator(mode="after")
    def _devices(self) -> "PipelineConfig":
        """Check every device string's form; sections without a device take the top-level one."""
        try:
            top = check_device_string(self.device, "device")
            object.__setattr__(self, "device", top)
            for name in MODEL_SECTIONS:
                section = getattr(self, name)
                dev = top if section.device is None else check_device_string(section.device, f"{name}.device")
                if dev != section.device:  # a copy: default section instances are shared between configs
                    object.__setattr__(self, name, section.model_copy(update={"device": dev}))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def resolved_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting (defaults included)."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`resolved_dict` (first 16 hex digits)."""
        blob = json.dumps(self.resolved_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------- loading
PRESETS_PACKAGE = "hmrflow.configs"


def list_presets() -> list[str]:
    """Names of the presets shipped in ``configs/``."""
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _load_preset(preset: str) -> tuple[str, dict[str, Any]]:
    path = Path(preset)
    res = resources.files(PRESETS_PACKAGE) / f"{preset}.yaml"
    # a preset's name wins over a folder of the same name in the working directory
    if path.suffix in (".yaml", ".yml") or (path.exists() and not res.is_file()):
        if not path.is_file():
            raise ConfigError(f"{preset}: config file not found")
        return path.stem, _read_yaml(path.read_text(encoding="utf-8"), str(path))
    if not res.is_file():
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(list_presets())} or give a .yaml path")
    return preset, _read_yaml(res.read_text(encoding="utf-8"), f"preset {preset}")


def _apply_override(tree: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}")
        elif not err["loc"]:  # a whole-config check: its message names the keys
            lines.append(err["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
    return f"{source}: invalid config: " + "; ".join(lines)


def _real_preset_onnx(name: str, tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Preset ``real`` runs the user's ONNX detector when one is given (``detect.onnx_path``)
    and ``detect.kind`` was not set on the command line; HOG otherwise."""
    det = tree.get("detect")
    chosen = any(str(ov).split("=", 1)[0].strip() == "detect.kind" for ov in overrides)
    if name == "real" and isinstance(det, dict) and det.get("onnx_path") and not chosen:
        det["kind"] = "onnx"


def load_config(preset: str | None = "clip", overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from a preset name or YAML path plus ``key=value`` overrides.

    Raises :class:`ConfigError` naming the offending key for unknown keys, wrong types and
    out-of-range values.
    """
    name, tree = _load_preset(preset or "clip")
    tree = dict(tree)
    tree.setdefault("preset", name)
    for ov in overrides:
        _apply_override(tree, ov)
    _real_preset_onnx(name, tree, overrides)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, f"preset {preset}" if preset else "config")) from None
