"""``EstimateStage``: DetectedFrames -> MeshEstimates (SMPL pose, shape and camera per person).

All people of a batch of frames are cropped at once (:func:`hmrflow.stages.mesh.crop.make_crops`,
HMR2.0's box -> crop rule with ``cfg.crop_rescale`` context) and the ViT runs over them in
chunks of ``cfg.batch_size``.  On CUDA the ViT runs under autocast (``cfg.precision``: bf16 or
fp16; rotations, the camera conversion and everything after stay fp32).  On the CPU, ``precision="bf16"``
autocasts the ViT to bf16 only where the CPU has bf16 instructions (AVX512-BF16, AMX, Arm BF16;
:func:`~hmrflow.pipeline.devices.cpu_has_native_bf16`): elsewhere bf16 is emulated and several
times slower than fp32, so fp32 runs (docs/bench/estimator.md has the figures); ``fp16`` runs fp32 on the CPU and
``precision="fp32"`` turns autocast off everywhere.  The weak-perspective crop camera becomes a full-image SMPL
translation with a focal length: ``cfg.focal_px`` when the camera is known, else
``cfg.focal_default``: ``"diagonal"`` = sqrt(W^2 + H^2) (default; on the synthetic crowded set
it gave 7 mm lower MPJPE and 10x lower jitter than HMR2's near-orthographic
``5000 / 256 * max(W, H)``, ``"hmr2"``).  ``focal`` is reported per row so later stages can
re-project consistently.  The network predicts the global orientation as
seen along the viewing ray through the crop centre; the stage turns it into the camera frame
with :func:`ray_rotation` (with the default focal the rays are within ~1.5 deg of the axis).

Accelerations (:mod:`hmrflow.stages.mesh.accel`), both applied by :meth:`EstimateStage.setup`:

* **ECLM** (layer merging) is a checkpoint, not a switch: a merged checkpoint written by
  ``hmrflow accelerate`` carries its merge plan and architecture in its header and is loaded
  as the shallower model it is (no calibration).  Such a file in ``cfg.weights`` is detected by
  its header; ``cfg.eclm=True`` with ``cfg.weights`` unset loads the bundled merged file
  ``estimator_<size>_eclm.safetensors`` (with ``cfg.weights`` set, it demands a merged file).
* **Mask-ToMe** (``cfg.tome_r`` > 0, or a per-block list): background tokens are merged inside the ViT; the
  detections' box-relative person masks become per-token coverage of each crop
  (:func:`~hmrflow.stages.mesh.crop.make_crops`) and every token the person touches is
  protected (never merged, nothing merged into it).

Weights: ``cfg.weights`` or the bundled file ``stages/mesh/weights/estimator_<size>.safetensors``.
hmrflow's own files carry the crop size in their safetensors header; a state dict in HMR2.0's
published layout (keys ``backbone.blocks.*`` + ``smpl_head.*``) is imported with
:mod:`.hmr2_import`.  Columns: ``scores`` keeps the detector score, ``confidence`` is the
estimator's own confidence (sigmoid of its confidence readout).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from hmrflow.pipeline.config import EstimateConfig
from hmrflow.pipeline.devices import autocast_dtype, resolve_device
from hmrflow.pipeline.errors import CheckpointError, ConfigError
from hmrflow.pipeline.results import DetectedFrames
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import MeshEstimates
from hmrflow.priors.rotations import rotation_z_to
from hmrflow.stages.mesh.camera import cam_crop_to_full, focal_by_rule
from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator
from hmrflow.stages.mesh.crop import make_crops
from hmrflow.stages.mesh.fastmetro import FastMETROHead
from hmrflow.stages.mesh.model import EstimatorOutput, MeshEstimator
from hmrflow.stages.mesh.vertex_fit import fit_to_vertices

log = logging.getLogger(__name__)

#: The estimator outputs the stage keeps (CPU, fp32); the mesh ones are None for the SMPL head.
_KEPT = ("rotmats", "betas", "pred_cam", "confidence", "pose6d", "feature", "vertices", "mesh_joints")

#: Share of one GPU a worker of this stage asks Ray for when it runs on a GPU (detect and
#: estimate run fused in one actor: together they ask for one GPU).
GPU_SHARE = 0.5


def ray_rotation(
    center: torch.Tensor, image_wh: torch.Tensor | tuple[float, float], focal: torch.Tensor | float
) -> torch.Tensor:
    """(N, 3, 3) rotations taking the optical axis (0, 0, 1) to the viewing ray through each crop centre.

    The estimator predicts the body's global orientation as seen along that ray (a crop shows
    the person from the direction of the ray, not of the optical axis); ``R_ray @ root`` is the
    orientation in the camera frame.  center: (N, 2) image pixels; principal point = image centre.
    Minimal rotation (no roll about the ray), Rodrigues' formula.
    """
    c = torch.as_tensor(center, dtype=torch.float32).reshape(-1, 2)
    wh = torch.as_tensor(image_wh, dtype=torch.float32)
    f = torch.as_tensor(focal, dtype=torch.float32).expand(c.shape[0])
    return rotation_z_to(torch.cat([c - wh / 2, f[:, None]], dim=-1))


class EstimateStage(BaseStage[DetectedFrames, MeshEstimates]):
    """Per-person SMPL estimates for a batch of frames (see module docstring).

    ``body_model_cfg`` (a :class:`~hmrflow.pipeline.config.BodyModelConfig` or None) is only
    checked against the weights: the bundled weights were trained with the synthetic body model,
    so their betas mean nothing to real SMPL (a warning says so).
    """

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=GPU_SHARE)

    def __init__(self, cfg: EstimateConfig, body_model_cfg: Any = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.body_model_cfg = body_model_cfg
        self.model: Optional[MeshEstimator] = None
        self.device = torch.device("cpu")
        self.weights_path: Optional[Path] = None
        self.eclm_plan: Any = None  # ECLMPlan of a layer-merged checkpoint, else None
        self.tome_cfg: Any = None  # MaskToMeConfig when Mask-ToMe is on, else None
        self.body_model: Any = None  # the mesh fit's body model (estimate.mesh_fit_steps), else None

    def setup(self) -> None:
        """Resolve the device, load the weights (plain or layer-merged, see the module docstring)
        and switch Mask-ToMe on when ``cfg.tome_r`` merges anything."""
        cfg = self.cfg
        self.device = resolve_device(cfg.device, "estimate.device")
        path = self._weights_file()
        model, self.eclm_plan = load_estimator(path, cfg.size, cfg.image_size)
        if model.spec.head_kind != cfg.head:
            raise CheckpointError(
                f"{path}: weights of an estimator with a {model.spec.head_kind} head, but estimate.head is {cfg.head}"
            )
        self.body_model = None
        if isinstance(model.head, FastMETROHead):
            model.head.full_mesh = bool(cfg.vertices or cfg.mesh_fit_steps)
            if cfg.mesh_fit_steps:
                self.body_model = self._mesh_body_model(model.head, path)
        if cfg.eclm and self.eclm_plan is None:
            raise ConfigError(
                f"estimate.eclm is true but {path} is not a layer-merged checkpoint; make one with "
                f"`hmrflow accelerate --weights {path} --out merged.safetensors` and set estimate.weights to it, "
                "or set estimate.eclm: false"
            )
        self.tome_cfg = None
        if cfg.tome_enabled:
            from hmrflow.stages.mesh.accel.tome import MaskToMeConfig, apply_mask_tome

            r = tuple(cfg.tome_r) if isinstance(cfg.tome_r, list) else cfg.tome_r
            self.tome_cfg = MaskToMeConfig(r=r, schedule=cfg.tome_schedule, group_size=cfg.tome_group_size or None)
            apply_mask_tome(model, self.tome_cfg)
        self.model = model.to(self.device).eval()
        self.weights_path = path
        self._ready = True
        prec = str(self._autocast_dtype() or torch.float32).replace("torch.", "")
        accel = []
        if self.eclm_plan is not None:
            accel.append(
                f"ECLM depth {self.eclm_plan.base_depth} -> {self.eclm_plan.depth} {list(self.eclm_plan.groups)}"
            )
        if self.tome_cfg is not None:
            accel.append(f"Mask-ToMe r={cfg.tome_r} {cfg.tome_schedule}")
        log.info(
            "estimator %s (crops %dx%d, depth %d, %s%s) on %s from %s",
            cfg.size,
            *model.image_size,
            self.depth,
            prec,
            "".join(", " + a for a in accel),
            self.device,
            path,
        )

    @property
    def depth(self) -> int:
        """Transformer blocks the loaded backbone runs (fewer than the size's depth after ECLM)."""
        if self.model is None:
            raise RuntimeError("EstimateStage.depth: call setup() first")
        return len(self.model.backbone.blocks)

    def _weights_file(self) -> Path:
        """``cfg.weights``, else the bundled (merged, with ``cfg.eclm``) file; CheckpointError if none."""
        cfg = self.cfg
        if cfg.weights:
            return Path(cfg.weights).expanduser()
        path = bundled_weights_path(cfg.size, eclm=cfg.eclm, head=cfg.head)
        if not path.is_file():
            if cfg.eclm:
                raise CheckpointError(
                    f"{path}: no bundled layer-merged weights for the {cfg.size!r} estimator with the {cfg.head} head; "
                    "make them with `hmrflow accelerate` and set estimate.weights, or set estimate.eclm: false"
                )
            if cfg.head != "smpl":
                raise CheckpointError(
                    f"{path}: no bundled weights for the {cfg.size!r} estimator with the {cfg.head} head (only "
                    f"'tiny' ships); train them with `hmrflow train estimator --head {cfg.head}` and set estimate.weights"
                )
            raise CheckpointError(
                f"{path}: no bundled weights for the {cfg.size!r} estimator (only 'tiny' ships); "
                "set estimate.weights to a weights file (hmrflow's .safetensors or HMR2.0's layout)"
            )
        kind = getattr(self.body_model_cfg, "kind", "synthetic")
        if kind != "synthetic":
            log.warning(
                "the bundled %s estimator was trained with the synthetic body model; its shape (betas) "
                "and pose outputs are not calibrated for body_model.kind=%s",
                cfg.size,
                kind,
            )
        return path

    def _mesh_body_model(self, head: FastMETROHead, path: Path) -> Any:
        """The body model of the mesh fit: the configured one, which must be the one the head's
        mesh was built from (ConfigError otherwise)."""
        from hmrflow.priors.body_model import load_body_model

        body = load_body_model(self.body_model_cfg) if self.body_model_cfg is not None else load_body_model("synthetic")
        if head.cfg.body_model and body.sha256 != head.cfg.body_model:
            raise ConfigError(
                f"{path}: the FastMETRO head predicts the mesh of body model {head.cfg.body_model[:12]}, but "
                f"body_model is {body.kind} ({body.sha256[:12]}); estimate.mesh_fit_steps needs the same body model"
            )
        return body

    def _autocast_dtype(self) -> Optional[torch.dtype]:
        """bf16/fp16 on CUDA as configured; on the CPU bf16 only (fp16 -> fp32: no fast CPU fp16)."""
        return autocast_dtype(self.device, self.cfg.precision)

    @torch.no_grad()
    def predict_crops(self, crops: torch.Tensor, token_masks: Optional[torch.Tensor] = None) -> EstimatorOutput:
        """Run the ViT over normalised crops (N, 3, h, w) in chunks of ``cfg.batch_size``; fp32 outputs on CPU.

        token_masks: (N, gh, gw) person coverage per token cell (``Crops.token_masks``); with
        Mask-ToMe on, every cell with coverage > 0 is protected from merging (None: nothing is
        protected).  Ignored when Mask-ToMe is off.
        """
        self.ensure_setup()
        assert self.model is not None
        amp = self._autocast_dtype()
        use_masks = self.tome_cfg is not None and token_masks is not None
        if use_masks and token_masks.shape[0] != crops.shape[0]:
            raise ValueError(f"token_masks has {token_masks.shape[0]} rows for {crops.shape[0]} crops")
        outs: list[EstimatorOutput] = []
        for s in range(0, crops.shape[0], self.cfg.batch_size):
            chunk = crops[s : s + self.cfg.batch_size].to(self.device, non_blocking=True)
            kw = {}
            if use_masks:
                kw["protect"] = token_masks[s : s + self.cfg.batch_size].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                o = self.model(chunk, **kw)
            if self.body_model is not None and o.vertices is not None:
                rot, betas, pose6d = fit_to_vertices(
                    self.body_model, o.vertices.float(), o.pose6d, o.betas, steps=self.cfg.mesh_fit_steps
                )
                o = dataclasses.replace(o, rotmats=rot, betas=betas, pose6d=pose6d)
            outs.append(
                EstimatorOutput(**{f: None if getattr(o, f) is None else getattr(o, f).float().cpu() for f in _KEPT})
            )
        return EstimatorOutput.cat(outs)

    def __call__(self, x: DetectedFrames) -> MeshEstimates:
        """Crop every detected person of ``x.frames`` and estimate their SMPL bodies."""
        return self.estimate(x, self.cfg.focal_px)

    def default_focal(self, wh: torch.Tensor) -> torch.Tensor:
        """The focal length (pixels) used when none is known, per ``cfg.focal_default``."""
        return focal_by_rule(self.cfg.focal_default, wh)

    def estimate(self, x: DetectedFrames, focal_px: Optional[float] = None) -> MeshEstimates:
        """Like ``__call__`` with a known focal length in pixels (None: ``cfg.focal_default``)."""
        self.ensure_setup()
        assert self.model is not None
        det, frames = x.detections, x.frames
        n = len(det)
        if n == 0:
            return MeshEstimates.empty(det.video_id)
        pos = {int(f): i for i, f in enumerate(frames.frame_idx)}
        missing = sorted({int(f) for f in det.frame_idx} - set(pos))
        if missing:
            raise ValueError(f"detections refer to frames not in the batch: {missing[:5]}")
        index = np.array([pos[int(f)] for f in det.frame_idx], np.int64)
        masks = det.masks if self.tome_cfg is not None else None  # per-token person coverage only for Mask-ToMe
        crops = make_crops(
            frames.images,
            index,
            det.boxes_xyxy,
            masks,
            self.model.image_size,
            self.model.token_grid,
            self.cfg.crop_rescale,
        )
        out = self.predict_crops(crops.images, crops.token_masks)
        h, w = frames.images.shape[1:3]
        wh = torch.tensor([float(w), float(h)])
        focal = self.default_focal(wh) if focal_px is None else torch.tensor(float(focal_px))
        cam_t = cam_crop_to_full(out.pred_cam, crops.boxes.center, crops.boxes.size, wh, focal)
        rotmats = out.rotmats.clone()
        r_ray = ray_rotation(crops.boxes.center, wh, focal)
        rotmats[:, 0] = r_ray @ rotmats[:, 0]
        vertices = None
        if self.cfg.vertices and out.vertices is not None and out.mesh_joints is not None:
            # pelvis-relative, turned from the crop's ray frame into camera axes
            rel = out.vertices - out.mesh_joints[:, :1]
            vertices = (rel @ r_ray.transpose(1, 2)).numpy().astype(np.float16)
        return MeshEstimates(
            video_id=det.video_id,
            frame_idx=det.frame_idx.astype(np.int64),
            pts=det.pts.astype(np.float64),
            boxes_xyxy=det.boxes_xyxy.astype(np.float32),
            scores=det.scores.astype(np.float32),
            rotmats=rotmats.numpy().astype(np.float32),
            betas=out.betas.numpy().astype(np.float32),
            cam_t=cam_t.numpy().astype(np.float32),
            focal=np.full(n, float(focal), np.float32),
            confidence=out.confidence.numpy().astype(np.float32),
            appearance=np.asarray(det.appearance, np.float32),
            at_border=np.asarray(det.at_border, bool),
            feature=out.feature.numpy().astype(np.float16),
            vertices=vertices,
        )


def estimator_feature_id(cfg: EstimateConfig) -> Optional[str]:
    """The first 16 hex digits of the sha256 of the weights file ``cfg`` loads (its image
    features are what a feature-conditioned motion prior was trained on); None when the file
    is not there (the stage itself reports that)."""
    from hmrflow.pipeline.provenance import cached_file_sha256

    path = (
        Path(cfg.weights).expanduser() if cfg.weights else bundled_weights_path(cfg.size, eclm=cfg.eclm, head=cfg.head)
    )
    if not path.is_file():
        return None
    return cached_file_sha256(path)[:16]
