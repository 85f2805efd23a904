"""Noise schedules and the sampling loop of the motion prior (fp32, seeded CPU noise).

Training uses diffusers' ``DDPMScheduler`` (``prediction_type="sample"``: the denoiser
predicts clean features); inference swaps in ``DDIMScheduler`` (eta = 0, deterministic given
the initial noise) or ``DPMSolverMultistepScheduler`` built from the same config, with a few
steps.  The loop is written out (``for t in scheduler.timesteps``) so each step is visible.

Conditioning is given to the denoiser as input (the estimate features, mask and confidence,
see :mod:`.representation`); training drops it for a fraction of samples, so
``guidance_scale != 1`` gives classifier-free guidance (1.0, the default, is plain
conditional sampling and costs one forward per step).

The initial noise is drawn on the CPU from a ``torch.Generator`` seeded by the caller and
then moved to the model's device, so the same seed gives the same result on any machine.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

SamplerKind = Literal["ddim", "dpm"]

#: the training schedule (stored as scheduler_config.json beside the weights)
TRAIN_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="sample",
    clip_sample=False,
)


def training_scheduler() -> DDPMScheduler:
    """The DDPM scheduler used for training (adds noise at random timesteps)."""
    return DDPMScheduler(**TRAIN_SCHEDULE)


def inference_scheduler(kind: SamplerKind = "ddim", config: dict | None = None):
    """A few-step sampler built from the training schedule ``config`` (default :data:`TRAIN_SCHEDULE`)."""
    cfg = dict(config) if config is not None else dict(TRAIN_SCHEDULE)
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg, set_alpha_to_one=True, timestep_spacing="trailing")
    if kind == "dpm":
        return DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
        )
    raise ValueError(f"unknown sampler {kind!r}: use 'ddim' or 'dpm'")


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (the only noise source of sampling)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    cond: torch.Tensor,
    scheduler,
    steps: int,
    generator: torch.Generator,
    guidance_scale: float = 1.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw clean normalised features given conditioning.

    model: ``model(sample, timestep, cond) -> x0``; cond: (B, T, C) on the model's device;
    scheduler: from :func:`inference_scheduler` (its state is reset by ``set_timesteps``);
    generator: seeded CPU generator; noise: optional (B, T, n_feat) initial noise drawn by the
    caller (then ``generator`` is not used; lets a caller split a batch without changing results).
    Returns (B, T, n_feat) fp32.
    """
    b, t, _ = cond.shape
    n_feat = model.config.n_feat
    device = cond.device
    scheduler.set_timesteps(steps, device="cpu")
    if noise is None:
        noise = torch.randn((b, t, n_feat), generator=generator, dtype=torch.float32)
    x = noise.to(device=device, dtype=torch.float32)
    x = x * scheduler.init_noise_sigma
    uncond = torch.zeros_like(cond) if guidance_scale != 1.0 else None
    # timestep-independent part of the denoiser, computed once (when the model has one)
    kw = {"base": model.smoothed_estimate(cond)} if hasattr(model, "smoothed_estimate") else {}
    for step_t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, step_t)
        x0 = model(x_in, step_t.to(device), cond, **kw)
        if uncond is not None:
            x0_u = model(x_in, step_t.to(device), uncond)
            x0 = x0_u + guidance_scale * (x0 - x0_u)
        x = scheduler.step(x0, step_t, x).prev_sample
    return x.float()
