"""The motion denoiser: a small pre-norm transformer over the frames of a window.

Input per frame: the noisy normalised motion features ``x_t`` (N_FEAT) concatenated with the
conditioning (N_COND: the per-frame estimate, its observed mask and confidence, the camera
ray, see :mod:`.representation`; then, for a model with ``n_img_feat > 0``, the estimator's
normalised image feature of the frame and a "feature present" flag, see
:func:`image_conditioning`); the diffusion timestep enters as a sinusoidal embedding
added to every token.

A model trained with image features also carries a small shape head
(:meth:`MotionDenoiser.refine_betas`): one body shape per track from the mean of its frames'
features and the per-frame shape estimates.  Output: the clean features ``x_0`` (``prediction_type="sample"``), as the per-frame estimate
(the first ``n_feat`` conditioning channels) plus a learned correction.

A diffusers ``ModelMixin``/``ConfigMixin``, so ``save_pretrained(folder)`` and
``MotionDenoiser.from_pretrained(folder)`` work offline (config.json + safetensors).  The
feature normalisation statistics are part of the config, so a folder is self-contained.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from hmrflow.priors.motion_diffusion.representation import N_COND, N_FEAT


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) positions/timesteps -> (N, dim) sin/cos embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class MotionDenoiser(ModelMixin, ConfigMixin):
    """x0-predicting transformer denoiser over (B, T, N_FEAT) motion windows."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        n_feat: int = N_FEAT,
        n_cond: int = N_COND,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        window: int = 64,
        fps: float = 30.0,
        feat_mean: Optional[Sequence[float]] = None,
        feat_std: Optional[Sequence[float]] = None,
        smooth_sigmas: Sequence[float] = (24.0, 8.0, 2.5),
        n_img_feat: int = 0,
        img_mean: Optional[Sequence[float]] = None,
        img_std: Optional[Sequence[float]] = None,
        feature_estimator: Optional[str] = None,
    ) -> None:
        super().__init__()
        mean = torch.zeros(n_feat) if feat_mean is None else torch.tensor(list(feat_mean), dtype=torch.float32)
        std = torch.ones(n_feat) if feat_std is None else torch.tensor(list(feat_std), dtype=torch.float32)
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)
        imean = torch.zeros(n_img_feat) if img_mean is None else torch.tensor(list(img_mean), dtype=torch.float32)
        istd = torch.ones(n_img_feat) if img_std is None else torch.tensor(list(img_std), dtype=torch.float32)
        self.register_buffer("img_norm_mean", imean, persistent=False)
        self.register_buffer("img_norm_std", istd, persistent=False)
        n_in = n_feat + n_cond + (n_img_feat + 1 if n_img_feat else 0)
        self.in_proj = nn.Linear(n_in, d_model)
        if n_img_feat:
            # per-track shape: pooled normalised features + median betas -> betas residual
            self.shape_mlp = nn.Sequential(nn.Linear(n_img_feat + 10, 128), nn.GELU(), nn.Linear(128, 10))
            nn.init.zeros_(self.shape_mlp[2].weight)
            nn.init.zeros_(self.shape_mlp[2].bias)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=ff_mult * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out_proj = nn.Linear(d_model, n_feat)
        # residual on the estimate: at initialisation the prediction is the (normalised) per-frame
        # estimate itself (zero where unobserved), and training learns the correction
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    @property
    def cond_width(self) -> int:
        """Channels of the conditioning :meth:`forward` takes: ``n_cond`` (+ image features + flag)."""
        k = int(self.config.n_img_feat)
        return int(self.config.n_cond) + (k + 1 if k else 0)

    def image_conditioning(self, feature: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, T, n_img_feat) raw features, (B, T) bool present -> (B, T, n_img_feat + 1)
        normalised features (zero where absent) and the present flag."""
        m = present.to(torch.float32)[..., None]
        f = (feature.float() - self.img_norm_mean) / self.img_norm_std * m
        return torch.cat([f, m], dim=-1)

    def refine_betas(self, feature: torch.Tensor, present: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """One shape per track: (B, T, n_img_feat) features, (B, T) present, (B, 10) median
        betas -> (B, 10) refined betas (``betas`` unchanged where no frame has a feature)."""
        if not self.config.n_img_feat:
            return betas
        m = present.to(torch.float32)[..., None]
        n = m.sum(1)
        pooled = ((feature.float() - self.img_norm_mean) / self.img_norm_std * m).sum(1) / n.clamp_min(1.0)
        delta = self.shape_mlp(torch.cat([pooled, betas.float()], dim=-1))
        return betas.float() + delta * (n > 0).float()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        cond: torch.Tensor,
        base: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predict clean features.

        sample: (B, T, n_feat) noisy normalised features; timestep: scalar or (B,);
        cond: (B, T, :attr:`cond_width`) (the motion conditioning, then for a feature model
        :meth:`image_conditioning`); base: optional precomputed :meth:`smoothed_estimate` of
        ``cond`` (it does not depend on the timestep, so a sampler computes it once).
        Returns (B, T, n_feat).
        """
        b, t, _ = sample.shape
        if cond.shape[-1] != self.cond_width:
            raise ValueError(
                f"conditioning has {cond.shape[-1]} channels, this denoiser takes {self.cond_width} "
                f"(n_cond {self.config.n_cond}, image features {self.config.n_img_feat})"
            )
        ts = (
            torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
            if not torch.is_tensor(timestep) or timestep.numel() == 1
            else timestep.to(sample.device)
        )
        d = self.config.d_model
        h = self.in_proj(torch.cat([sample, cond], dim=-1))
        pos = sinusoidal_embedding(torch.arange(t, device=sample.device), d)
        temb = self.time_mlp(sinusoidal_embedding(ts, d))
        h = h + pos[None].to(h.dtype) + temb[:, None].to(h.dtype)
        h = self.blocks(h)
        if base is None:
            base = self.smoothed_estimate(cond)
        return base + self.out_proj(self.norm(h))

    def smoothed_estimate(self, cond: torch.Tensor) -> torch.Tensor:
        """Mask-aware multi-scale Gaussian average of the estimate features, (B, T, n_feat).

        For each ``sigma`` (frames, coarse to fine) the normalised convolution
        local linear fit (kernel-weighted least squares, falling back to the
        normalised convolution where the observed frames are one-sided) of the observed estimates is taken; a finer
        scale replaces the coarser one where it has at least one frame's worth of observed
        weight (soft), so observed stretches are lightly smoothed and gaps are bridged by the
        wider kernels.  This fixed skip path is the denoiser's starting point; the network
        learns the correction (flips, depth drift, detail lost by smoothing, motion in gaps).
        """
        n_feat = self.config.n_feat
        f = cond[..., :n_feat]
        m = cond[..., n_feat : n_feat + 1]  # (B, T, 1) observed
        t = cond.shape[1]
        pos = torch.arange(t, device=cond.device, dtype=cond.dtype)
        dist2 = (pos[:, None] - pos[None]) ** 2
        out = torch.zeros_like(f)
        d = pos[None, :] - pos[:, None]  # (T, T) s - t
        fm = f * m
        for sigma in self.config.smooth_sigmas:
            k = torch.exp(-0.5 * dist2 / float(sigma) ** 2)  # (T, T)
            s0 = torch.einsum("ts,bsc->btc", k, m)
            s1 = torch.einsum("ts,bsc->btc", k * d, m)
            s2 = torch.einsum("ts,bsc->btc", k * d * d, m)
            t0 = torch.einsum("ts,bsf->btf", k, fm)
            t1 = torch.einsum("ts,bsf->btf", k * d, fm)
            const = t0 / s0.clamp_min(1e-6)  # local constant fit
            det = s0 * s2 - s1 * s1
            linear = (s2 * t0 - s1 * t1) / det.clamp_min(1e-6)  # local linear fit (no edge bias)
            # trust the linear fit where the data surround t well (det relative to s0^2 sigma^2)
            good = (det / (s0 * s0 * float(sigma) ** 2).clamp_min(1e-6)).clamp(0.0, 0.25) * 4.0
            avg = good * linear + (1.0 - good) * const
            a = s0.clamp(0.0, 1.0)
            out = a * avg + (1.0 - a) * out
        return out

    # ------------------------------------------------------------ normalisation
    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """(…, n_feat) raw features -> normalised."""
        return (feats - self.norm_mean) / self.norm_std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """(…, n_feat) normalised -> raw features."""
        return x * self.norm_std + self.norm_mean
