"""Plain ViT backbone for the mesh estimator (HMR2.0 / ViTPose layout, timm-style parts).

Facts this module relies on (read in shubham-goel/4D-Humans @ 6ec7965,
``hmr2/models/backbones/vit.py``; the code here is our own):

* HMR2.0 uses a ViTPose-style ViT-H/16 on 256x192 (H x W) crops: embed dim 1280, depth 32,
  16 heads, MLP ratio 4, ``qkv_bias=True``, LayerNorm ``eps=1e-6`` everywhere in the backbone
  (blocks and ``last_norm``), exact GELU, no class token.
* The patch embedding is ``Conv2d(3, C, kernel=16, stride=16, padding=2)`` (ViTPose's
  ``padding = 4 + 2 * (ratio // 2 - 1)`` with ratio 1), so 256x192 gives a 16x12 token grid
  and every token's receptive field starts 2 px up/left of its 16 px cell.
* The learned position embedding has ``num_patches + 1`` rows (a slot for the class token of
  the pre-training model); HMR2 adds ``pos_embed[:, 1:] + pos_embed[:, :1]`` to the patch
  tokens.  We store the folded ``(1, N, C)`` sum (identical result; see ``hmr2_import``).
* The backbone returns the last-normed tokens; the SMPL head cross-attends to all of them.

Design for token merging (Mask-ToMe / ECLM, a later issue, ``stages/mesh/accel``):
``blocks`` is an ``nn.ModuleList`` of self-contained :class:`Block` modules with named parts
(``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``); each block's
``forward(x, attn_bias=None)`` accepts an additive attention bias (ToMe's proportional
attention adds ``log(token size)``) and works for any token count N.  Attention is split into
:meth:`Attention.project_qkv` and :meth:`Attention.attend` so a hook can read the keys as a
merge metric without recomputing them.  No module keeps state between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a plain ViT backbone.

    image_size: (H, W) of the input crops in pixels.
    patch_padding: zero padding of the patch convolution (2 in HMR2.0/ViTPose).
    """

    embed_dim: int
    depth: int
    num_heads: int
    image_size: tuple[int, int] = (256, 192)
    patch_size: int = 16
    patch_padding: int = 2
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        h, w = self.image_size
        if min(h, w) + 2 * self.patch_padding < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than one patch ({self.patch_size})")

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the token grid: the patch convolution's output size."""
        h, w = self.image_size
        p, pad = self.patch_size, self.patch_padding
        return ((h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1)

    @property
    def num_tokens(self) -> int:
        gh, gw = self.token_grid
        return gh * gw

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, C) -> q, k, v each (B, heads, N, head_dim)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scaled dot-product attention and output projection -> (B, N, C).

        attn_bias: optional additive bias broadcastable to (B, heads, N, N), e.g. ``log(size)``
        of shape (B, 1, 1, N) for proportional attention over merged tokens.
        """
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        b, h, n, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        return self.attend(q, k, v, attn_bias)


def init_linears_and_norms(module: nn.Module) -> None:
    """timm-style init of every submodule: truncated-normal (std 0.02) linears with zero bias,
    unit/zero LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N, C) -> (B, N, C); attn_bias as in :meth:`Attention.attend`."""
        x = x + self.drop_path(self.attn(self.norm1(x), attn_bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping-ish patch projection (a strided conv with HMR2's 2 px padding)."""

    def __init__(self, patch_size: int, padding: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> tokens (B, gh*gw, C) in row-major grid order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTBackbone(nn.Module):
    """ViT without class token: ``forward_features(crops) -> tokens (B, N, C)``."""

    def __init__(
        self, cfg: ViTConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.patch_padding, c)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, c))
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # stochastic depth rule
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, cfg.mlp_hidden, cfg.qkv_bias, cfg.norm_eps, drop_path=r) for r in rates
        )
        self.last_norm = nn.LayerNorm(c, eps=cfg.norm_eps)
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.cfg.token_grid

    def reset_parameters(self) -> None:
        """timm/ViTPose init: truncated normal (std 0.02) for linears and pos embed."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=1.0 / math.sqrt(w[0].numel()))
        nn.init.zeros_(self.patch_embed.proj.bias)
        init_linears_and_norms(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, H, W) -> patch tokens plus position embedding (B, N, C)."""
        tokens = self.patch_embed(x)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(
                f"crops of size {tuple(x.shape[-2:])} give {tokens.shape[1]} tokens; this backbone was "
                f"built for {self.cfg.image_size} ({self.pos_embed.shape[1]} tokens)"
            )
        return tokens + self.pos_embed.to(tokens.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised crops -> last-normed tokens (B, N, C), row-major grid."""
        tokens = self.embed(x)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.last_norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)
