"""SMPL head: a one-query transformer decoder that cross-attends to the ViT tokens.

Facts this module relies on (read in shubham-goel/4D-Humans @ 6ec7965,
``hmr2/models/heads/smpl_head.py``, ``hmr2/models/components/pose_transformer.py`` and
``hmr2/configs_hydra/experiment/hmr_vit_transformer.yaml``; the code here is our own):

* ``SMPLTransformerDecoderHead``: ONE query token.  Its input is a zero token of width 1
  (``TRANSFORMER_INPUT: zero``) passed through ``to_token_embedding = Linear(1, dim)`` (so the
  query is that layer's bias) plus a learned ``pos_embedding`` (1, 1, dim).
* Decoder: depth 6, heads 8, dim_head 64 (inner 512), dim 1024, mlp_dim 1024, dropout 0,
  ``context_dim`` 1280 (the ViT-H width).  Each layer is pre-norm (``nn.LayerNorm``, default
  eps 1e-5): self-attention (``to_qkv`` without bias, ``to_out`` Linear with bias), cross-
  attention (``to_q``, ``to_kv`` without bias over the context, ``to_out``), feed-forward
  (Linear -> GELU -> Linear), each added residually.
* Readout: ``decpose`` (dim -> 24*6), ``decshape`` (dim -> 10), ``deccam`` (dim -> 3) added to
  the mean parameters ``init_body_pose`` (1, 144), ``init_betas`` (1, 10), ``init_cam`` (1, 3)
  (from SPIN's ``smpl_mean_params.npz``).  Iterative error feedback runs ``IEF_ITERS`` times,
  1 by default (the query input stays zero, so more iterations would only repeat the same
  residual); we keep the loop for fidelity.
* 6D layout: ``x.reshape(-1, 2, 3)`` rows are the two matrix columns, i.e. the same layout as
  :func:`hmrflow.priors.rotations.rot6d_to_matrix` (first 3 values = column 0).

hmrflow adds a confidence readout (``confidence``: Linear(dim, 1) on the final query; the
estimator applies a sigmoid), which HMR2.0 does not have.  The cross-attention accepts an
additive ``context_bias`` (B, 1, 1, N) so merged tokens can carry ``log(size)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hmrflow.stages.mesh.backbone import Mlp, init_linears_and_norms

N_JOINTS = 24
N_BETAS = 10
ROT6D = 6


@dataclass(frozen=True)
class HeadConfig:
    """Shape of the SMPL transformer-decoder head (HMR2.0 defaults)."""

    context_dim: int
    dim: int = 1024
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    ief_iters: int = 1
    norm_eps: float = 1e-5

    @property
    def inner_dim(self) -> int:
        return self.heads * self.dim_head


def standing_mean_params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Default mean parameters: an upright standing body facing the camera.

    Returns pose6d (24*6,), betas (10,), cam (3,).  Body joints are identity; the root is
    rotated 180 degrees about x (diag(1, -1, -1)) so SMPL's y-up body stands upright in the
    OpenCV camera frame (y down).  cam = (s=0.9, tx=0, ty=0) as in SPIN's mean params.
    """
    rot = torch.eye(3).repeat(N_JOINTS, 1, 1)
    rot[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    pose6d = rot[:, :, :2].transpose(1, 2).reshape(-1)  # columns 0 and 1, column-major
    return pose6d, torch.zeros(N_BETAS), torch.tensor([0.9, 0.0, 0.0])


class SelfAttention(nn.Module):
    """Multi-head self-attention of the decoder query (fused ``to_qkv``, no bias)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, Q, dim) -> (B, Q, dim).  attn_mask: broadcastable to (B, heads, Q, Q), bool (True =
        may attend) or additive float."""
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))


class CrossAttention(nn.Module):
    """Query tokens attend to context tokens (``to_q`` on the query, ``to_kv`` on the context)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x (B, Q, dim), context (B, N, context_dim), context_bias (B, 1, 1, N) additive -> (B, Q, dim)."""
        q = _split_heads(self.to_q(x), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(context).chunk(2, dim=-1))
        if context_bias is not None:
            context_bias = context_bias.to(q.dtype)
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=context_bias)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward, each residual."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.self_attn = SelfAttention(cfg.dim, cfg.heads, cfg.dim_head)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.cross_attn = CrossAttention(cfg.dim, cfg.context_dim, cfg.heads, cfg.dim_head)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.ff = Mlp(cfg.dim, cfg.mlp_dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), context, context_bias)
        return x + self.ff(self.norm3(x))


@dataclass
class HeadOutput:
    """Raw head readout (before rotation conversion).

    pose6d: (B, 24, 6); betas: (B, 10); cam: (B, 3) weak-perspective (s, tx, ty);
    confidence_logit: (B,); query: (B, dim) final query token.
    Mesh heads (FastMETRO) also give joints (B, 24, 3) from the joint tokens, coarse (B, N, 3),
    vertices (B, V, 3) and mesh_joints (B, 24, 3) regressed from the vertices (fp32, metres, in
    the body model's frame at zero translation); None for the SMPL head.
    """

    pose6d: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor
    confidence_logit: torch.Tensor
    query: torch.Tensor
    joints: Optional[torch.Tensor] = None
    coarse: Optional[torch.Tensor] = None
    vertices: Optional[torch.Tensor] = None
    mesh_joints: Optional[torch.Tensor] = None


class SMPLHead(nn.Module):
    """One-query transformer decoder regressing SMPL residuals from ViT tokens."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embed = nn.Linear(1, cfg.dim)
        self.query_pos = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.depth))
        self.decpose = nn.Linear(cfg.dim, N_JOINTS * ROT6D)
        self.decshape = nn.Linear(cfg.dim, N_BETAS)
        self.deccam = nn.Linear(cfg.dim, 3)
        self.confidence = nn.Linear(cfg.dim, 1)
        pose6d, betas, cam = standing_mean_params()
        self.register_buffer("init_pose", pose6d)
        self.register_buffer("init_betas", betas)
        self.register_buffer("init_cam", cam)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal linears; readouts near zero (xavier, gain 0.01) so the head starts
        at the mean parameters, as HMR2's ``INIT_DECODER_XAVIER`` option does."""
        init_linears_and_norms(self)
        nn.init.trunc_normal_(self.query_pos, std=0.02)
        for m in (self.decpose, self.decshape, self.deccam, self.confidence):
            nn.init.xavier_uniform_(m.weight, gain=0.01)
            nn.init.zeros_(m.bias)

    def zero_readout_(self) -> None:
        """Zero the residual readouts: the head then outputs exactly the mean parameters."""
        with torch.no_grad():
            for m in (self.decpose, self.decshape, self.deccam):
                m.weight.zero_()
                m.bias.zero_()

    def query_token(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The zero input token embedded: (B, 1, dim)."""
        zero = torch.zeros(batch, 1, 1, device=self.query_pos.device, dtype=dtype)
        return self.token_embed(zero) + self.query_pos.to(dtype)

    def forward(self, context: torch.Tensor, context_bias: Optional[torch.Tensor] = None) -> HeadOutput:
        """context (B, N, context_dim) tokens; context_bias optional (B, 1, 1, N) additive."""
        b = context.shape[0]
        pose = self.init_pose.expand(b, -1)
        betas = self.init_betas.expand(b, -1)
        cam = self.init_cam.expand(b, -1)
        q = context.new_zeros(0)
        for _ in range(self.cfg.ief_iters):
            q = self.query_token(b, context.dtype)
            for layer in self.layers:
                q = layer(q, context, context_bias)
            q = q[:, 0]
            # residuals in fp32 around the fp32 mean parameters (autocast may give bf16 here)
            pose = self.decpose(q).float() + pose
            betas = self.decshape(q).float() + betas
            cam = self.deccam(q).float() + cam
        conf = self.confidence(q).float()[:, 0]
        return HeadOutput(pose6d=pose.reshape(b, N_JOINTS, ROT6D), betas=betas, cam=cam, confidence_logit=conf, query=q)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)
