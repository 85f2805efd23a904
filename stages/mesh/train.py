"""Training loop pieces of the mesh estimator: batches, augmentation, trainer, checkpoints, validation.

The data is any object with NumPy fields ``images`` (N, h, w, 3) uint8, ``rotmats``
(N, 24, 3, 3), ``betas`` (N, 10), ``joints3d`` (N, 24, 3) and ``joints2d`` (N, 24, 2)
(e.g. :class:`hmrflow.jobs.train.estimator_data.CropSet`; images may be memory-mapped).
:class:`EstimatorTrainer` owns model, AdamW optimiser and a warm-up + cosine schedule; its
checkpoint (``save``/``load``) holds all three plus the step, epoch and RNG state, so a run
resumed from it continues exactly.  The ViT runs under bf16/fp16 autocast on CUDA; the body
model and the losses stay fp32.  With ``merge_aware > 0`` every step also trains a randomly
layer-merged copy of the model (an ECLM plan of the family the search explores, LaCo-merged
weights built differentiably from the original blocks), so that the ECLM merges accepted later
cost little accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

import numpy as np
import torch

from hmrflow.pipeline.devices import autocast_dtype
from hmrflow.priors.metrics import mpjpe, pa_mpjpe, pve
from hmrflow.stages.mesh.accel.eclm import forward_features_merged, sample_plan
from hmrflow.stages.mesh.crop import normalise_uint8
from hmrflow.stages.mesh.losses import EstimatorTargets, LossWeights, estimator_losses
from hmrflow.stages.mesh.model import MeshEstimator, build_estimator

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hmrflow.estimator_train.v1"


class CropData(Protocol):
    images: np.ndarray
    rotmats: np.ndarray
    betas: np.ndarray
    joints3d: np.ndarray
    joints2d: np.ndarray

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one estimator training run (written to train_config.json)."""

    size: str = "tiny"
    image_size: tuple[int, int] = (128, 96)
    #: ``smpl`` (HMR2.0's one-query decoder) or ``fastmetro`` (mesh encoder-decoder)
    head: str = "smpl"
    #: FastMETRO: mask decoder self-attention by the coarse mesh's adjacency (False = the ablation)
    attention_mask: bool = True
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    precision: str = "bf16"  # autocast dtype on CUDA (CPU trains in fp32)
    augment: bool = True
    occluder_p: float = 0.3
    ray_frame: bool = True  # root orientation targets in the frame of the ray through the crop centre
    losses: LossWeights = field(default_factory=LossWeights)
    #: merge-aware training: weight of the loss of a randomly layer-merged copy of the model
    #: (an ECLM plan drawn per step, LaCo-merged weights, gradients into the original blocks);
    #: 0 = off.  Makes the trained weights robust to the merges the ECLM search later accepts.
    merge_aware: float = 0.0
    merge_spans: tuple[int, ...] = (2, 3)
    merge_p: float = 0.6
    #: in-place distillation of the merged copy towards the full model's (detached) outputs:
    #: weight of the squared error on 6D pose, betas and camera (0 = ground truth only)
    merge_distill: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        d["merge_spans"] = list(self.merge_spans)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["image_size"] = tuple(d.get("image_size", cls.image_size))
        d["merge_spans"] = tuple(d.get("merge_spans", cls.merge_spans))
        d["losses"] = LossWeights(**d.get("losses", {}))
        return cls(**d)


def augment_images(images: torch.Tensor, gen: torch.Generator, occluder_p: float = 0.3) -> torch.Tensor:
    """Cheap photometric augmentation and random box occluders on (B, h, w, 3) uint8 -> same.

    Per image: brightness x U(0.7, 1.3), per-channel gain x U(0.85, 1.15), contrast about the
    mean x U(0.7, 1.3), Gaussian noise of std U(0, 6); with probability ``occluder_p`` a
    flat-coloured rectangle of 10-40% of the crop side covers a random place.  Geometry is
    untouched (targets stay valid).
    """
    b, h, w, _ = images.shape
    x = images.float()
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.7 + 0.6 * u(b, 1, 1, 1)
    gain = (0.7 + 0.6 * u(b, 1, 1, 1)) * (0.85 + 0.3 * u(b, 1, 1, 3))
    x = ((x - mean) * contrast + mean) * gain
    x = x + torch.randn(x.shape, generator=gen) * (6 * u(b, 1, 1, 1))
    occ = (u(b) < occluder_p).nonzero().flatten().tolist()
    for i in occ:
        oh, ow = int(h * (0.1 + 0.3 * float(u(1)))), int(w * (0.1 + 0.3 * float(u(1))))
        y0, x0 = int((h - oh) * float(u(1))), int((w - ow) * float(u(1)))
        x[i, y0 : y0 + oh, x0 : x0 + ow] = u(3) * 255
    return x.clamp_(0, 255)


#: The full image (W, H) the training crops were cut from (principal point at its centre).
FULL_IMAGE_WH = (640.0, 480.0)


def make_batch(
    data: CropData,
    idx: np.ndarray,
    augment: bool = False,
    gen: Optional[torch.Generator] = None,
    occluder_p: float = 0.3,
    ray_frame: bool = True,
) -> tuple[torch.Tensor, EstimatorTargets]:
    """Rows ``idx`` of ``data`` -> normalised crops (B, 3, h, w) and :class:`EstimatorTargets`.

    ``ray_frame``: express the global orientation and the 3D joints in the frame of the viewing
    ray through the crop centre (``R_ray^T``, see :func:`hmrflow.stages.mesh.stage.ray_rotation`;
    needs ``data.center`` and ``data.focal``), which is what a crop shows.
    """
    idx = np.sort(np.asarray(idx))  # sorted reads are faster on a memory map
    imgs = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
    if augment:
        imgs = augment_images(imgs, gen if gen is not None else torch.Generator().manual_seed(0), occluder_p)
    rotmats = torch.from_numpy(np.asarray(data.rotmats[idx], np.float32))
    joints3d = torch.from_numpy(np.asarray(data.joints3d[idx], np.float32))
    if ray_frame:
        from hmrflow.stages.mesh.stage import ray_rotation

        r_t = ray_rotation(
            torch.from_numpy(np.asarray(data.center[idx], np.float32)),
            FULL_IMAGE_WH,
            torch.from_numpy(np.asarray(data.focal[idx], np.float32)),
        ).transpose(1, 2)
        rotmats = rotmats.clone()
        rotmats[:, 0] = r_t @ rotmats[:, 0]
        joints3d = joints3d @ r_t.transpose(1, 2)
    targets = EstimatorTargets(
        rotmats=rotmats,
        betas=torch.from_numpy(np.asarray(data.betas[idx], np.float32)),
        joints3d=joints3d,
        joints2d=torch.from_numpy(np.asarray(data.joints2d[idx], np.float32)),
    )
    return normalise_uint8(imgs), targets


class EstimatorTrainer:
    """Model + AdamW + warm-up/cosine schedule + step counter, with exact checkpoints.

    ``total_steps`` fixes the cosine schedule (epochs x steps per epoch).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        body_model: torch.nn.Module,
        total_steps: int,
        device: torch.device | str = "cpu",
        model: Optional[MeshEstimator] = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.model = (
            model
            or build_estimator(
                cfg.size, cfg.image_size, head=cfg.head, body_model=body_model, attention_mask=cfg.attention_mask
            )
        ).to(self.device)
        self.body_model = body_model.to(self.device)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "pos_embed" in name or "query_pos" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.999),
        )
        self.total_steps = max(1, int(total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.epoch = 0
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.np_rng = np.random.default_rng(cfg.seed + 2)
        self.history: list[dict[str, Any]] = []
        self.amp = autocast_dtype(self.device, cfg.precision, cpu_bf16=False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

    def _lr_factor(self, step: int) -> float:
        warm = max(1, self.cfg.warmup_steps)
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    def train_step(self, images: torch.Tensor, targets: EstimatorTargets) -> dict[str, float]:
        """One optimiser step on a batch; returns the loss terms as floats."""
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.model(images)
        terms = estimator_losses(out, targets, self.body_model, self.cfg.losses)
        total = terms["total"]
        merged_total = None
        if self.cfg.merge_aware > 0:
            plan = sample_plan(
                len(self.model.backbone.blocks), self.gen, self.cfg.merge_spans, p_merge=self.cfg.merge_p
            )
            if plan.groups:
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    out_m = self.model.forward_head(forward_features_merged(self.model.backbone, images, plan))
                merged_total = estimator_losses(out_m, targets, self.body_model, self.cfg.losses)["total"]
                if self.cfg.merge_distill > 0:
                    merged_total = merged_total + self.cfg.merge_distill * (
                        (out_m.pose6d - out.pose6d.detach()).pow(2).mean()
                        + (out_m.betas - out.betas.detach()).pow(2).mean()
                        + (out_m.pred_cam - out.pred_cam.detach()).pow(2).mean()
                    )
                total = total + self.cfg.merge_aware * merged_total
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        res = {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}
        res["mpjpe_mm"] = float(terms["mpjpe"].mean()) * 1000
        if merged_total is not None:
            res["merged_total"] = float(merged_total.detach())
        res["grad_norm"] = float(gnorm)
        res["lr"] = float(self.scheduler.get_last_lr()[0])
        return res

    def epoch_batches(self, n: int) -> Iterator[np.ndarray]:
        """Shuffled index batches of one epoch (drops the last partial batch)."""
        perm = self.np_rng.permutation(n)
        bs = self.cfg.batch_size
        for s in range(0, n - bs + 1, bs):
            yield perm[s : s + bs]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "total_steps": self.total_steps,
            "gen": self.gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from hmrflow.pipeline.errors import CheckpointError

        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not an estimator training checkpoint (format {state.get('format')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.total_steps = int(state["total_steps"])
        self.gen.set_state(state["gen"])
        self.np_rng.bit_generator.state = state["np_rng"]
        self.history = list(state["history"])

    def save(self, path: str | Path) -> Path:
        """Atomically write the full training state (torch pickle of plain containers)."""
        from hmrflow.pipeline.atomic import atomic_path

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp:
            torch.save(self.state_dict(), tmp)
        return p

    def load(self, path: str | Path) -> None:
        """Restore a state written by :meth:`save` (``weights_only`` loading: no code runs)."""
        from hmrflow.pipeline.errors import CheckpointError

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted unpickler raises many types on junk
            raise CheckpointError(f"{path}: cannot read training checkpoint ({type(exc).__name__}: {exc})") from None
        try:
            self.load_state_dict(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None


@torch.no_grad()
def evaluate_crops(
    model: MeshEstimator,
    data: CropData,
    body_model: torch.nn.Module,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "bf16",
    ray_frame: bool = True,
) -> dict[str, Any]:
    """Per-crop MPJPE (pelvis-aligned), PA-MPJPE and PVE in mm over ``data``: means, medians and arrays.

    The figures are those of the SMPL parameters (the body model posed with the predicted
    rotations and shape); a mesh head (FastMETRO) adds ``mesh_mpjpe_mm``, ``mesh_pa_mpjpe_mm``
    and ``mesh_pve_mm`` of its own vertices and the joints regressed from them.

    With ``ray_frame`` the model's orientation is compared in the frame of the ray through the crop
    centre (as the stage uses it with the true focal length)."""
    device = torch.device(device)
    model.eval()
    amp = autocast_dtype(device, precision, cpu_bf16=False)
    rows: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        rows.setdefault(name, []).append(value.float().cpu())

    n = len(data)
    body_model = body_model.to(device)
    for s in range(0, n, batch_size):
        images, targets = make_batch(data, np.arange(s, min(n, s + batch_size)), ray_frame=ray_frame)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(images.to(device))
        body = body_model(out.rotmats.float(), out.betas.float())
        gt = body_model(targets.rotmats.to(device), targets.betas.to(device))
        gt3d = targets.joints3d.to(device)
        add("mpjpe", mpjpe(body.joints, gt3d))
        add("pa_mpjpe", pa_mpjpe(body.joints, gt3d))
        add("pve", pve(body.vertices, gt.vertices, body.joints[:, 0], gt.joints[:, 0]))
        add("confidence", out.confidence)
        if out.vertices is not None and out.mesh_joints is not None:  # a mesh head's own output
            add("mesh_mpjpe", mpjpe(out.mesh_joints.float(), gt3d))
            add("mesh_pa_mpjpe", pa_mpjpe(out.mesh_joints.float(), gt3d))
            add("mesh_pve", pve(out.vertices.float(), gt.vertices, out.mesh_joints[:, 0].float(), gt.joints[:, 0]))
    arr = {k: torch.cat(v).numpy() for k, v in rows.items()}
    res: dict[str, Any] = {
        "mpjpe_mm": float(arr["mpjpe"].mean()),
        "pa_mpjpe_mm": float(arr["pa_mpjpe"].mean()),
        "pve_mm": float(arr["pve"].mean()),
        "mpjpe_median_mm": float(np.median(arr["mpjpe"])),
        "pa_mpjpe_median_mm": float(np.median(arr["pa_mpjpe"])),
        "n": int(n),
        "per_crop_mpjpe_mm": arr["mpjpe"],
        "per_crop_pa_mpjpe_mm": arr["pa_mpjpe"],
        "confidence": arr["confidence"],
    }
    for k in ("mesh_mpjpe", "mesh_pa_mpjpe", "mesh_pve"):
        if k in arr:
            res[f"{k}_mm"] = float(arr[k].mean())
    return res
