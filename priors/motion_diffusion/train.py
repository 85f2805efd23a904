"""Training of the motion prior (resumable; CPU friendly).

Data: a bank of clean world-frame motions (the procedural motion library, seeds
``seed .. seed + n_motions``; plus every AMASS-style ``.npz`` under ``amass_dir`` if given).
Each training sample is a window of ``window`` frames, placed in front of a random camera
(:func:`.noise_model.random_camera`), corrupted by :func:`.noise_model.apply_noise` into
per-frame estimates, canonicalised on those estimates (:mod:`.representation`), and the
denoiser learns ``x0`` from ``x_t`` and the conditioning (DDPM, random timesteps) with an
MSE on features plus an MSE on their frame-to-frame differences (smoothness).

With ``pairs_dirs`` (folders written by ``hmrflow train prior-pairs``) the model is conditioned
on the estimator's image features too, and each batch mixes ``real_fraction`` windows of the
pipeline's real tracks paired with ground truth (:mod:`.pairs`; features present) with
noise-model windows (features absent); the loss is masked to frames with ground truth and
adds the pelvis-aligned joint error of the predicted poses (forward kinematics of the template
body, :func:`joint_loss`) and a per-track shape loss.  ``init_from`` starts from an earlier
prior (its weights are copied; new input columns start at zero).

One epoch is ``steps_per_epoch`` optimiser steps; after each epoch the full state (model,
optimiser, learning-rate schedule, epoch) is written to ``work_dir/resume.pt`` and the model
is exported with ``save_pretrained`` to ``out_dir``.  ``resume=True`` continues from
``resume.pt`` (with more ``epochs`` than the saved run, the added epochs get a second, smaller
one-cycle learning-rate schedule); the data of epoch ``e`` come from ``numpy.random.default_rng([seed, e])``
so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from hmrflow.pipeline.types import FEATURE_DIM
from hmrflow.priors.motion_diffusion import load_prior
from hmrflow.priors.motion_diffusion.denoiser import MotionDenoiser
from hmrflow.priors.motion_diffusion.noise_model import NoiseConfig, apply_noise, random_camera, world_to_camera
from hmrflow.priors.motion_diffusion.pairs import feature_stats as pair_feature_stats
from hmrflow.priors.motion_diffusion.pairs import load_pair_tracks, sample_pair_windows
from hmrflow.priors.motion_diffusion.representation import (
    N_FEAT,
    N_ROT_FEAT,
    canonicalise,
    conditioning,
    reference_frame,
)
from hmrflow.priors.motion_diffusion.sampling import TRAIN_SCHEDULE, training_scheduler
from hmrflow.priors.rotations import axis_angle_to_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (written to ``train_config.json``)."""

    seed: int = 0
    n_motions: int = 160
    motion_seconds: float = 12.0
    path_fraction: float = 0.3
    fps: float = 30.0
    window: int = 64
    batch_size: int = 32
    steps_per_epoch: int = 40
    epochs: int = 9
    max_minutes: float = 21.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    vel_weight: float = 1.0
    cond_drop: float = 0.05
    d_model: int = 96
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 3
    threads: int = 2
    amass_dir: Optional[str] = None
    val_motions: int = 8
    extend_lr_factor: float = 0.3
    pairs_dirs: tuple[str, ...] = ()
    real_fraction: float = 0.5
    feature_drop: float = 0.15
    joint_weight: float = 1.0
    root_weight: float = 1.0
    shape_weight: float = 1.0
    init_from: Optional[str] = None
    feature_estimator: Optional[str] = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        noise = d.pop("noise", {}) or {}
        noise = {k: tuple(v) if isinstance(v, list) else v for k, v in noise.items()}
        if "pairs_dirs" in d:
            d["pairs_dirs"] = tuple(d["pairs_dirs"] or ())
        return cls(noise=NoiseConfig(**noise), **d)


@dataclass(frozen=True)
class ClipBank:
    """Clean world-frame motions: lists of rotmats (T, 24, 3, 3) and transl (T, 3), float32."""

    rotmats: list[np.ndarray]
    transl: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.rotmats)


def _motion_arrays(poses: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rot = axis_angle_to_matrix(torch.from_numpy(np.ascontiguousarray(poses, np.float32))).numpy()
    return rot.astype(np.float32), np.asarray(trans, np.float32)


def synthetic_motions(seeds: Iterable[int], seconds: float, fps: float, path_fraction: float = 0.3):
    """Yield (rotmats (T,24,3,3), transl (T,3)) world-frame motions from the motion library."""
    from hmrflow.priors.motion_library import compose_motion, random_path_motion

    for s in seeds:
        rng = np.random.default_rng([12345, int(s)])
        if rng.random() < path_fraction:
            goal = rng.uniform(-6, 6, size=2)
            m = random_path_motion(
                rng, seconds, fps, (0.0, 0.0), (float(goal[0]), float(goal[1])), waypoints=int(rng.integers(0, 3))
            )
        else:
            m = compose_motion(rng, seconds, fps, direction=float(rng.uniform(0, 360)))
        yield _motion_arrays(m.poses, m.trans)


def build_bank(cfg: TrainConfig, seeds: Iterable[int]) -> ClipBank:
    """Motions of ``seeds`` from the library plus AMASS files under ``cfg.amass_dir``."""
    rots, trs = [], []
    for r, t in synthetic_motions(seeds, cfg.motion_seconds, cfg.fps, cfg.path_fraction):
        rots.append(r)
        trs.append(t)
    if cfg.amass_dir:
        from hmrflow.priors.amass import iter_amass_dir

        n0 = len(rots)
        for m in iter_amass_dir(cfg.amass_dir, fps=cfg.fps):
            if m.n_frames >= cfg.window:
                r, t = _motion_arrays(m.poses, m.trans)
                rots.append(r)
                trs.append(t)
        log.info("added %d AMASS motions from %s", len(rots) - n0, cfg.amass_dir)
    return ClipBank(rots, trs)


def sample_windows(
    bank: ClipBank, rng: np.random.Generator, n: int, window: int, fps: float, noise: NoiseConfig
) -> dict[str, torch.Tensor]:
    """``n`` random camera-frame windows with their simulated per-frame estimates.

    Returns tensors: clean_rot (n, W, 24, 3, 3), clean_transl (n, W, 3), rot, transl (noisy),
    observed (n, W) bool, confidence (n, W).
    """
    out: dict[str, list] = {k: [] for k in ("clean_rot", "clean_transl", "rot", "transl", "observed", "confidence")}
    lengths = np.array([len(r) for r in bank.rotmats])
    probs = np.maximum(lengths - window + 1, 0).astype(np.float64)
    probs /= probs.sum()
    for _ in range(n):
        k = int(rng.choice(len(bank), p=probs))
        s = int(rng.integers(0, lengths[k] - window + 1))
        rot_w, tr_w = bank.rotmats[k][s : s + window], bank.transl[k][s : s + window]
        r, t = random_camera(rng, tr_w.mean(0))
        rot_c, tr_c = world_to_camera(rot_w, tr_w, r, t)
        est = apply_noise(rot_c, tr_c, rng, fps, noise)
        for key, val in (
            ("clean_rot", rot_c),
            ("clean_transl", tr_c),
            ("rot", est.rotmats),
            ("transl", est.transl),
            ("observed", est.observed),
            ("confidence", est.confidence),
        ):
            out[key].append(val)
    return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}


def prepare(
    batch: dict[str, torch.Tensor], mean: torch.Tensor, std: torch.Tensor, model: Optional[MotionDenoiser] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows -> (normalised clean features (B, W, N_FEAT), conditioning (B, W, C)).

    With a ``model`` that takes image features, ``C`` is its ``cond_width``: the batch's
    ``feature``/``feature_present`` are appended (absent when the batch has none).
    """
    w = batch["observed"].float() * batch["confidence"]
    frame = reference_frame(batch["rot"][:, :, 0], batch["transl"], w)
    x0 = (canonicalise(batch["clean_rot"], batch["clean_transl"], frame) - mean) / std
    cond = conditioning(batch["rot"], batch["transl"], batch["observed"], batch["confidence"], frame, mean, std)
    if model is not None and model.config.n_img_feat:
        b, t = cond.shape[:2]
        feat = batch.get("feature", torch.zeros(b, t, model.config.n_img_feat))
        present = batch.get("feature_present", torch.zeros(b, t, dtype=torch.bool))
        cond = torch.cat([cond, model.image_conditioning(feat, present)], dim=-1)
    return x0, cond


class TemplateKinematics:
    """Pelvis-relative joint positions of the template body posed by rotations (torch, fp32)."""

    def __init__(self) -> None:
        from hmrflow.priors.body_model import load_body_model

        bm = load_body_model(kind="synthetic", device="cpu")
        self.rest = bm.rest_joints(batch=1)[0].detach().float()  # (24, 3)
        self.parents = torch.as_tensor(np.asarray(bm.parents), dtype=torch.long)
        # rest joints are linear in betas: J(b) = rest + b @ shape_dirs, shape_dirs (10, 24, 3)
        eye = torch.eye(10)
        self.shape_dirs = (bm.rest_joints(eye) - self.rest[None]).detach().float()

    def shape_error(self, betas: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, 10) x2 -> (B,) mean distance (metres) of the rest-pose joints relative to the root."""
        d = torch.einsum("bl,ljc->bjc", betas - target, self.shape_dirs)
        d = d - d[:, :1]
        return d.norm(dim=-1).mean(-1)

    def __call__(self, rotmats: torch.Tensor) -> torch.Tensor:
        """(..., 24, 3, 3) -> (..., 24, 3) joints minus the root joint."""
        from smplx.lbs import batch_rigid_transform

        lead = rotmats.shape[:-3]
        r = rotmats.reshape(-1, 24, 3, 3)
        joints, _ = batch_rigid_transform(r, self.rest.expand(r.shape[0], 24, 3), self.parents)
        joints = joints - joints[:, :1]
        return joints.reshape(*lead, 24, 3)


def joint_loss(
    kin: TemplateKinematics,
    pred: torch.Tensor,
    x0: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Mean pelvis-aligned joint distance (metres) between the poses of two normalised feature
    windows (B, W, N_FEAT), plus the same with both root orientations removed, over every other
    frame where ``mask`` (B, W) is True."""
    from hmrflow.priors.rotations import rot6d_to_matrix

    # every other frame: forward kinematics costs more than the denoiser itself on a CPU
    pred, x0, mask = pred[:, ::2], x0[:, ::2], mask[:, ::2]
    b, t = pred.shape[:2]
    rp = rot6d_to_matrix((pred * std + mean)[..., :N_ROT_FEAT].reshape(b, t, 24, 6))
    rg = rot6d_to_matrix((x0 * std + mean)[..., :N_ROT_FEAT].reshape(b, t, 24, 6))
    d = (kin(rp) - kin(rg)).norm(dim=-1).mean(-1)  # (B, W) what MPJPE measures (root orientation included)
    # the articulation alone (both roots set to the identity), what PA-MPJPE mostly measures
    eye = torch.eye(3).expand(b, t, 1, 3, 3)
    local = (kin(torch.cat([eye, rp[:, :, 1:]], 2)) - kin(torch.cat([eye, rg[:, :, 1:]], 2))).norm(dim=-1).mean(-1)
    m = mask.float()
    return ((d + local) * m).sum() / m.sum().clamp_min(1.0)


def feature_stats(bank: ClipBank, cfg: TrainConfig, n: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std (N_FEAT,) of canonical clean windows (std floored)."""
    rng = np.random.default_rng([cfg.seed, 99991])
    batch = sample_windows(bank, rng, n, cfg.window, cfg.fps, cfg.noise)
    w = batch["observed"].float() * batch["confidence"]
    frame = reference_frame(batch["rot"][:, :, 0], batch["transl"], w)
    f = canonicalise(batch["clean_rot"], batch["clean_transl"], frame).reshape(-1, N_FEAT)
    mean, std = f.mean(0), f.std(0)
    std[:N_ROT_FEAT] = std[:N_ROT_FEAT].clamp_min(0.05)
    std[N_ROT_FEAT:] = std[N_ROT_FEAT:].clamp_min(0.1)
    return mean, std


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def diffusion_loss(
    model: MotionDenoiser,
    scheduler,
    x0: torch.Tensor,
    cond: torch.Tensor,
    gen: torch.Generator,
    vel_weight: float,
    cond_drop: float,
    mask: Optional[torch.Tensor] = None,
    kin: Optional[TemplateKinematics] = None,
    joint_weight: float = 0.0,
    root_weight: float = 0.0,
) -> torch.Tensor:
    """DDPM x0 loss: MSE on features + ``vel_weight`` x MSE on frame differences, over frames
    where ``mask`` (B, W) is True (default all), + ``joint_weight`` x :func:`joint_loss` in
    decimetres when ``kin`` is given, + ``root_weight`` x the root position error across the
    viewing ray in decimetres (plus a tenth of the error along it).  Frames outside the mask are given the model's
    smoothed estimate as their clean value (their ground truth is unknown)."""
    b = x0.shape[0]
    m = torch.ones(x0.shape[:2], dtype=torch.bool) if mask is None else mask
    mf = m.float()[..., None]
    if mask is not None:
        with torch.no_grad():
            x0 = torch.where(m[..., None], x0, model.smoothed_estimate(cond))
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
    xt = scheduler.add_noise(x0, noise, t)
    if cond_drop > 0:
        keep = (torch.rand(b, generator=gen) >= cond_drop).float()[:, None, None]
        cond = cond * keep
    pred = model(xt, t, cond)
    denom = mf.sum().clamp_min(1.0) * x0.shape[-1]
    loss = ((pred - x0) ** 2 * mf).sum() / denom
    if vel_weight > 0:
        mv = mf[:, 1:] * mf[:, :-1]
        loss = loss + vel_weight * ((pred.diff(dim=1) - x0.diff(dim=1)) ** 2 * mv).sum() / (
            mv.sum().clamp_min(1.0) * x0.shape[-1]
        )
    if kin is not None and joint_weight > 0:
        loss = loss + joint_weight * 10.0 * joint_loss(kin, pred, x0, model.norm_mean, model.norm_std, m)
    if root_weight > 0:
        # root position error across the viewing ray (decimetres): where the body is drawn in the
        # image, which the normalised feature loss weighs as 3 numbers out of 147; the error
        # along the ray (depth, poorly observed) counts a tenth
        std = model.norm_std[N_ROT_FEAT:]
        dp = (pred[..., N_ROT_FEAT:] - x0[..., N_ROT_FEAT:]) * std  # (B, W, 3) metres, canonical frame
        ray = cond[..., N_FEAT + 2 : N_FEAT + 5]  # unit viewing ray (zero where unobserved)
        along = (dp * ray).sum(-1, keepdim=True)
        d = (dp - along * ray).norm(dim=-1) + 0.1 * along[..., 0].abs()
        loss = loss + root_weight * 10.0 * (d * m.float()).sum() / m.float().sum().clamp_min(1.0)
    return loss


def train_prior(
    cfg: TrainConfig, out_dir: str | Path, work_dir: str | Path, resume: bool = False, progress: bool = True
) -> Path:
    """Train (or resume) the motion prior; export it to ``out_dir`` after every epoch.

    Returns ``out_dir``.  Writes ``out_dir/config.json`` + weights, ``scheduler_config.json``,
    ``train_config.json`` (this config, epochs done, losses, minutes); ``work_dir/resume.pt``.
    """
    torch.set_num_threads(cfg.threads)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    resume_path = work_dir / "resume.pt"
    t0 = time.monotonic()
    bank = build_bank(cfg, range(cfg.seed, cfg.seed + cfg.n_motions))
    log.info(
        "motion bank: %d motions, %d frames (%.0f s)",
        len(bank),
        sum(len(r) for r in bank.rotmats),
        time.monotonic() - t0,
    )
    state = None
    if resume and resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state["train_config"] != json.loads(json.dumps(cfg.to_dict())):
            log.warning("resume: training config differs from the one in %s; using the saved model config", resume_path)
        model = MotionDenoiser.from_config(state["model_config"])
        model.load_state_dict(state["model"])
    pair_tracks = load_pair_tracks(list(cfg.pairs_dirs)) if cfg.pairs_dirs else []
    if cfg.pairs_dirs and not pair_tracks:
        raise ValueError(f"no usable tracks in the pairs folders {list(cfg.pairs_dirs)}")
    if state is None:
        init = load_prior(cfg.init_from) if cfg.init_from else None
        if init is not None:
            mean, std = init.norm_mean.clone(), init.norm_std.clone()
        else:
            mean, std = feature_stats(bank, cfg)
        img_kw: dict = {}
        if pair_tracks:
            img_mean, img_std = pair_feature_stats(pair_tracks)
            img_kw = dict(
                n_img_feat=FEATURE_DIM,
                img_mean=img_mean.tolist(),
                img_std=img_std.tolist(),
                feature_estimator=cfg.feature_estimator,
            )
        torch.manual_seed(cfg.seed)
        model = MotionDenoiser(
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            ff_mult=cfg.ff_mult,
            window=cfg.window,
            fps=cfg.fps,
            feat_mean=mean.tolist(),
            feat_std=std.tolist(),
            **img_kw,
        )
        if init is not None:
            copy_matching_weights(init, model)
    scheduler = training_scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.05)
    history: list[dict] = []
    start_epoch, minutes_before = 0, 0.0
    if state is not None:
        opt.load_state_dict(state["opt"])
        start_epoch, history, minutes_before = int(state["epoch"]), list(state["history"]), float(state["minutes"])
        saved_total = int(state["train_config"]["epochs"]) * int(state["train_config"]["steps_per_epoch"])
        if saved_total == total:
            lr_sched.load_state_dict(state["lr_sched"])
        elif start_epoch < cfg.epochs:
            # extended run: a second, smaller one-cycle over the added epochs (warm restart)
            lr_sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=cfg.lr * cfg.extend_lr_factor,
                total_steps=(cfg.epochs - start_epoch) * cfg.steps_per_epoch,
                pct_start=0.1,
            )
            log.info(
                "extending training from %d to %d epochs (max lr %.2g)",
                start_epoch,
                cfg.epochs,
                cfg.lr * cfg.extend_lr_factor,
            )
        log.info("resumed from %s at epoch %d", resume_path, start_epoch)
    mean, std = model.norm_mean, model.norm_std
    n_params = sum(p.numel() for p in model.parameters())
    log.info("denoiser: %.2fM parameters", n_params / 1e6)
    # fixed held-out batch for a loss curve (library seeds far from the training seeds)
    val_bank = build_bank(
        dataclasses.replace(cfg, amass_dir=None), range(cfg.seed + 100_000, cfg.seed + 100_000 + cfg.val_motions)
    )
    kin = TemplateKinematics() if cfg.joint_weight > 0 else None

    def make_batch(rng: np.random.Generator, bank_: ClipBank, n: int) -> tuple[torch.Tensor, ...]:
        """A mixed batch: (x0, cond, loss mask, real-window batch or None)."""
        n_real = int(round(n * cfg.real_fraction)) if pair_tracks else 0
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if n - n_real > 0:
            x0, cond = prepare(sample_windows(bank_, rng, n - n_real, cfg.window, cfg.fps, cfg.noise), mean, std, model)
            parts.append((x0, cond, torch.ones(x0.shape[:2], dtype=torch.bool)))
        real = None
        if n_real:
            real = sample_pair_windows(pair_tracks, rng, n_real, cfg.window, feature_drop=cfg.feature_drop)
            rx0, rcond = prepare(real, mean, std, model)
            parts.append((rx0, rcond, real["loss_mask"]))
        x0, cond, mask = (torch.cat([p[i] for p in parts]) for i in range(3))
        return x0, cond, mask, real

    def batch_loss(batch: tuple, gen: torch.Generator, cond_drop: float) -> torch.Tensor:
        x0, cond, mask, real = batch
        loss = diffusion_loss(
            model, scheduler, x0, cond, gen, cfg.vel_weight, cond_drop, mask, kin, cfg.joint_weight, cfg.root_weight
        )
        if real is not None and cfg.shape_weight > 0:
            has = real["loss_mask"].any(1).float()
            pred_b = model.refine_betas(real["feature"], real["feature_present"], real["betas"])
            if kin is not None:  # what the shape changes in the joints (decimetres), as MPJPE sees it
                err = 10.0 * kin.shape_error(pred_b, real["gt_betas"])
            else:
                err = ((pred_b - real["gt_betas"]) ** 2).mean(-1)
            loss = loss + cfg.shape_weight * (err * has).sum() / has.sum().clamp_min(1.0)
        return loss

    val_batch = make_batch(np.random.default_rng([cfg.seed, 7]), val_bank, 128)
    t_start = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        model.train()
        losses = []
        it = range(cfg.steps_per_epoch)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for _ in it:
            loss = batch_loss(make_batch(rng, bank, cfg.batch_size), gen, cfg.cond_drop)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            vgen = torch.Generator().manual_seed(1)
            val_loss = float(batch_loss(val_batch, vgen, 0.0))
        minutes = minutes_before + (time.monotonic() - t_start) / 60.0
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "minutes": round(minutes, 2),
            }
        )
        log.info("epoch %d: train %.4f val %.4f (%.1f min)", epoch + 1, np.mean(losses), val_loss, minutes)
        _atomic_torch_save(
            {
                "model": model.state_dict(),
                "model_config": dict(model.config),
                "opt": opt.state_dict(),
                "lr_sched": lr_sched.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "minutes": minutes,
                "train_config": cfg.to_dict(),
            },
            resume_path,
        )
        export(model, out_dir, cfg, history, n_params)
        if minutes >= cfg.max_minutes:
            log.warning("stopping after epoch %d: time budget of %.0f min reached", epoch + 1, cfg.max_minutes)
            break
    return out_dir


def copy_matching_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy every parameter of ``src`` whose name and shape ``dst`` shares; a wider input
    projection gets the old columns and zeros for the new ones (new inputs start ignored)."""
    dst_state = dst.state_dict()
    for name, val in src.state_dict().items():
        if name not in dst_state:
            continue
        tgt = dst_state[name]
        if tgt.shape == val.shape:
            tgt.copy_(val)
        elif name == "in_proj.weight" and tgt.shape[0] == val.shape[0] and tgt.shape[1] > val.shape[1]:
            tgt.zero_()
            tgt[:, : val.shape[1]] = val
    dst.load_state_dict(dst_state)


def export(model: MotionDenoiser, out_dir: Path, cfg: TrainConfig, history: list[dict], n_params: int) -> None:
    """Write the model (config.json + safetensors), scheduler_config.json and train_config.json."""
    model.save_pretrained(out_dir, safe_serialization=True)
    training_scheduler().save_config(out_dir)
    info = {
        "train_config": cfg.to_dict(),
        "schedule": TRAIN_SCHEDULE,
        "parameters": n_params,
        "epochs_done": history[-1]["epoch"] if history else 0,
        "history": history,
    }
    tmp = out_dir / "train_config.json.tmp"
    tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "train_config.json")
