"""FastMETRO head: an encoder-decoder transformer that regresses the body mesh itself.

Facts taken from the FastMETRO paper (Cho et al., ECCV 2022; ``../shared/seeds``); the code is ours:

* Image features are projected to the transformer width.  An **encoder** runs over a learnable
  camera token plus the image tokens; a **decoder** whose inputs are K joint tokens and N
  coarse-vertex tokens (431 for SMPL) cross-attends to the encoded image tokens.
* Decoder self-attention between coarse vertices that are not neighbours on the coarse mesh is
  masked out; joint tokens attend to, and are attended by, every token.
* Two transformer stages with **progressive dimensionality reduction** between them (512 -> 128
  in the paper; linear layers on the encoder memory and on the decoder tokens).  Sizes S / M / L
  have 1 / 2 / 3 encoder and decoder layers per stage.
* One linear layer gives the 3D position of every joint and coarse-vertex token; a fixed sparse
  upsampling matrix U gives the full mesh; joints are also regressed from the full mesh with the
  body model's joint regressor; the camera token gives a weak-perspective camera.
* FastMETRO's SMPL variant adds a regressor from the predicted mesh to SMPL parameters.

hmrflow's adaptations, and why:

* The head reads the **ViT backbone's tokens** (possibly merged by ECLM or Mask-ToMe, with
  ``context_bias = log(size)`` on the keys) exactly as the SMPL head does, so both accelerations
  apply unchanged.  No extra positional encoding is added: the tokens carry the ViT's own, and a
  merged token has no single grid position.
* The coarse mesh, its adjacency and U come from the body model in use
  (:mod:`hmrflow.stages.mesh.coarse_mesh`); they, the joint regressor and the mean body are
  buffers of the head, so a weights file is self-contained.
* The token positions are residuals on the mean standing body, and the camera on the SMPL head's
  mean camera, so an untrained head starts at the mean body as the SMPL head does.
* The SMPL-parameter regressor (an MLP on the pelvis-centred joints and coarse vertices, detached
  so that the mesh is trained by mesh losses only) gives the rotations and betas the rest of the
  pipeline consumes; :mod:`hmrflow.stages.mesh.vertex_fit` can refine them on the mesh.
* The camera token also gives hmrflow's confidence and the compact feature for refinement.
* The layers are pre-norm (the SMPL head's attention modules), with a final LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hmrflow.stages.mesh.backbone import Mlp, init_linears_and_norms
from hmrflow.stages.mesh.coarse_mesh import upsample
from hmrflow.stages.mesh.head import (
    N_BETAS,
    N_JOINTS,
    ROT6D,
    CrossAttention,
    HeadOutput,
    SelfAttention,
    standing_mean_params,
)

if TYPE_CHECKING:
    from hmrflow.priors.body_model import BodyModel
    from hmrflow.stages.mesh.coarse_mesh import CoarseMesh


@dataclass(frozen=True)
class FastMETROConfig:
    """Shape of the FastMETRO head.

    dims: transformer width of each stage (progressive reduction, e.g. (128, 64)).
    layers: encoder and decoder layers per stage (FastMETRO S / M / L = 1 / 2 / 3).
    n_vertices / n_coarse: full and coarse mesh sizes of the body model the head was built for;
    body_model: that body model's array hash (sha256).
    attention_mask: mask decoder self-attention between non-adjacent coarse vertices.
    regressor_dim: hidden width of the SMPL-parameter regressor.
    """

    context_dim: int
    n_vertices: int
    n_coarse: int
    dims: tuple[int, ...] = (128, 64)
    layers: int = 1
    heads: int = 4
    mlp_ratio: float = 2.0
    attention_mask: bool = True
    regressor_dim: int = 512
    body_model: str = ""
    kind: str = field(default="fastmetro", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if not self.dims or any(d % self.heads for d in self.dims):
            raise ValueError(f"FastMETRO dims {self.dims} must be non-empty multiples of heads={self.heads}")
        if self.layers < 1:
            raise ValueError(f"FastMETRO layers must be >= 1, got {self.layers}")

    @property
    def n_tokens(self) -> int:
        """Decoder tokens: joints then coarse vertices."""
        return N_JOINTS + self.n_coarse


#: Head shape per estimator size (the transformer's input width is the backbone's).
FASTMETRO_SIZES: dict[str, dict[str, object]] = {
    "tiny": dict(dims=(64, 32), layers=1, heads=2, regressor_dim=512),
    "small": dict(dims=(256, 64), layers=1, heads=8, regressor_dim=1024),
    "base": dict(dims=(512, 128), layers=2, heads=8, regressor_dim=1024),
    "large": dict(dims=(512, 128), layers=3, heads=8, regressor_dim=1024),
    "huge": dict(dims=(512, 128), layers=3, heads=8, regressor_dim=1024),
}


def decoder_attention_allowed(adjacency: np.ndarray | torch.Tensor, n_joints: int = N_JOINTS) -> torch.Tensor:
    """(K+N, K+N) bool self-attention pattern of the decoder (True = may attend): joint rows and
    columns all True; between coarse vertices, the adjacency (with its diagonal)."""
    adj = torch.as_tensor(np.asarray(adjacency, bool))
    n = adj.shape[0]
    allowed = torch.ones(n_joints + n, n_joints + n, dtype=torch.bool)
    allowed[n_joints:, n_joints:] = adj | torch.eye(n, dtype=torch.bool)
    return allowed


class EncoderLayer(nn.Module):
    """Pre-norm self-attention (keys biased by token size) and feed-forward."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x (B, T, dim); key_bias (B, 1, 1, T) additive or None."""
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.ff(self.norm2(x))


class MeshDecoderLayer(nn.Module):
    """Pre-norm masked self-attention over joint + vertex tokens, cross-attention to the encoded
    image tokens, feed-forward."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, dim, heads, dim // heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_bias: Optional[torch.Tensor],
        allowed: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """x (B, K+N, dim); memory (B, T, dim); memory_bias (B, 1, 1, T); allowed (K+N, K+N)
        bool decoder pattern (None: every token attends to every token).  The pattern is applied
        as a dense mask: on a CPU a gather over each vertex's few neighbours was slower than
        masked dense attention over a few hundred tokens."""
        x = x + self.self_attn(self.norm1(x), allowed)
        x = x + self.cross_attn(self.norm2(x), memory, memory_bias)
        return x + self.ff(self.norm3(x))


class Stage(nn.Module):
    """One transformer of FastMETRO: ``layers`` encoder then ``layers`` decoder layers."""

    def __init__(self, dim: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio) for _ in range(layers))
        self.decoder = nn.ModuleList(MeshDecoderLayer(dim, heads, mlp_ratio) for _ in range(layers))


class FastMETROHead(nn.Module):
    """Backbone tokens (B, T, C) -> joints, coarse and full mesh, camera, SMPL parameters.

    Build with :func:`build_fastmetro_head` (topology from a body model) or construct from a
    config and load a state dict (the topology buffers are in it).
    """

    def __init__(self, cfg: FastMETROConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d0, d_last = cfg.dims[0], cfg.dims[-1]
        n_tok = cfg.n_tokens
        self.input_proj = nn.Linear(cfg.context_dim, d0)
        self.cam_token = nn.Parameter(torch.zeros(1, 1, d0))
        self.mesh_tokens = nn.Parameter(torch.zeros(1, n_tok, d0))
        self.stages = nn.ModuleList(Stage(d, cfg.layers, cfg.heads, cfg.mlp_ratio) for d in cfg.dims)
        self.reduce_memory = nn.ModuleList(nn.Linear(a, b) for a, b in zip(cfg.dims[:-1], cfg.dims[1:]))
        self.reduce_tokens = nn.ModuleList(nn.Linear(a, b) for a, b in zip(cfg.dims[:-1], cfg.dims[1:]))
        self.norm_memory = nn.LayerNorm(d_last)
        self.norm_tokens = nn.LayerNorm(d_last)
        self.xyz = nn.Linear(d_last, 3)
        self.cam = nn.Linear(d_last, 3)
        self.confidence = nn.Linear(d_last, 1)
        r = cfg.regressor_dim
        self.regressor = nn.Sequential(
            nn.Linear(n_tok * 3, r), nn.GELU(), nn.Linear(r, r), nn.GELU(), nn.Linear(r, N_JOINTS * ROT6D + N_BETAS)
        )
        pose6d, betas, cam = standing_mean_params()
        self.register_buffer("init_pose", pose6d)
        self.register_buffer("init_betas", betas)
        self.register_buffer("init_cam", cam)
        # topology and mean body (filled by build_fastmetro_head or a state dict)
        self.register_buffer("allowed", torch.ones(n_tok, n_tok, dtype=torch.bool))
        self.register_buffer("up_idx", torch.zeros(cfg.n_vertices, 3, dtype=torch.long))
        self.register_buffer("up_w", torch.zeros(cfg.n_vertices, 3))
        self.register_buffer("j_regressor", torch.zeros(N_JOINTS, cfg.n_vertices))
        self.register_buffer("template", torch.zeros(n_tok, 3))
        #: compute the full mesh (False: only the coarse mesh and the joints, which is all the
        #: SMPL readout needs; the estimate stage turns it off unless vertices are kept)
        self.full_mesh = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal linears and tokens; readouts near zero so the head starts at the mean body."""
        init_linears_and_norms(self)
        for p in (self.cam_token, self.mesh_tokens):
            nn.init.trunc_normal_(p, std=0.02)
        for m in (self.xyz, self.cam, self.confidence, self.regressor[-1]):
            nn.init.xavier_uniform_(m.weight, gain=0.01)
            nn.init.zeros_(m.bias)

    def set_topology(self, mesh: "CoarseMesh", j_regressor: torch.Tensor, template: torch.Tensor) -> None:
        """Fill the topology buffers: the coarse mesh, the (24, V) joint regressor and the mean
        body's (K+N, 3) joints then coarse vertices."""
        cfg = self.cfg
        if mesh.n_coarse != cfg.n_coarse or mesh.n_vertices != cfg.n_vertices:
            raise ValueError(
                f"coarse mesh {mesh.n_vertices}->{mesh.n_coarse} does not fit the head ({cfg.n_vertices}->{cfg.n_coarse})"
            )
        with torch.no_grad():
            self.allowed.copy_(decoder_attention_allowed(mesh.adjacency))
            self.up_idx.copy_(torch.as_tensor(mesh.up_idx))
            self.up_w.copy_(torch.as_tensor(mesh.up_w))
            self.j_regressor.copy_(j_regressor.float())
            self.template.copy_(template.float())

    def _joints_from_coarse(self) -> torch.Tensor:
        """(24, N) = J_regressor @ U: the full mesh's joints straight from the coarse vertices,
        recomputed when a buffer changes (a state dict load bumps its version) or moves."""
        key = (self.j_regressor._version, self.up_w._version, self.up_idx._version, self.j_regressor.device)
        if getattr(self, "_ju_key", None) != key:
            ju = torch.zeros(N_JOINTS, self.cfg.n_coarse, device=self.j_regressor.device)
            w = self.j_regressor[:, :, None] * self.up_w[None]  # (24, V, 3)
            ju.scatter_add_(1, self.up_idx.reshape(1, -1).expand(N_JOINTS, -1), w.reshape(N_JOINTS, -1))
            self._ju, self._ju_key = ju, key
        return self._ju

    def forward(self, context: torch.Tensor, context_bias: Optional[torch.Tensor] = None) -> HeadOutput:
        """context (B, T, context_dim) tokens; context_bias optional (B, 1, 1, T) additive."""
        cfg = self.cfg
        b = context.shape[0]
        x = self.input_proj(context)
        memory = torch.cat([self.cam_token.to(x.dtype).expand(b, -1, -1), x], dim=1)
        mem_bias = None if context_bias is None else F.pad(context_bias, (1, 0))
        tokens = self.mesh_tokens.to(x.dtype).expand(b, -1, -1)
        allowed = self.allowed if cfg.attention_mask else None
        for i, stage in enumerate(self.stages):
            if i > 0:
                memory = self.reduce_memory[i - 1](memory)
                tokens = self.reduce_tokens[i - 1](tokens)
            for enc in stage.encoder:
                memory = enc(memory, mem_bias)
            for dec in stage.decoder:
                tokens = dec(tokens, memory[:, 1:], context_bias, allowed)
        memory = self.norm_memory(memory)
        tokens = self.norm_tokens(tokens)
        cam_feat = memory[:, 0]
        # geometry in fp32 around the fp32 mean body (autocast may give bf16 here)
        xyz = self.xyz(tokens).float() + self.template
        joints, coarse = xyz[:, :N_JOINTS], xyz[:, N_JOINTS:]
        with torch.autocast(device_type=xyz.device.type, enabled=False):
            vertices = upsample(coarse, self.up_idx, self.up_w) if self.full_mesh else None
            mesh_joints = torch.einsum("jn,bnc->bjc", self._joints_from_coarse(), coarse)
            rel = (xyz - joints[:, :1]).detach()
            params = self.regressor(rel.flatten(1).to(self.regressor[0].weight.dtype)).float()
        pose = params[:, : N_JOINTS * ROT6D] + self.init_pose
        betas = params[:, N_JOINTS * ROT6D :] + self.init_betas
        cam = self.cam(cam_feat).float() + self.init_cam
        conf = self.confidence(cam_feat).float()[:, 0]
        return HeadOutput(
            pose6d=pose.reshape(b, N_JOINTS, ROT6D),
            betas=betas,
            cam=cam,
            confidence_logit=conf,
            query=cam_feat,
            joints=joints,
            coarse=coarse,
            vertices=vertices,
            mesh_joints=mesh_joints,
        )


def fastmetro_config(
    size: str, context_dim: int, body_model: "BodyModel", attention_mask: bool = True, **overrides: object
) -> FastMETROConfig:
    """The FastMETRO head config of an estimator size for ``body_model``'s mesh."""
    from hmrflow.stages.mesh.coarse_mesh import DECIMATION

    if size not in FASTMETRO_SIZES:
        raise ValueError(f"unknown estimator size {size!r}; choose one of {', '.join(FASTMETRO_SIZES)}")
    n_v = int(body_model.n_vertices)
    kw = {**FASTMETRO_SIZES[size], **overrides}
    return FastMETROConfig(
        context_dim=context_dim,
        n_vertices=n_v,
        n_coarse=max(4, round(n_v / DECIMATION)),
        attention_mask=attention_mask,
        body_model=body_model.sha256,
        **kw,  # type: ignore[arg-type]
    )


@torch.no_grad()
def topology_from_body_model(head: FastMETROHead, body_model: "BodyModel") -> None:
    """Fill ``head``'s topology buffers from ``body_model`` (coarse mesh cached by its hash)."""
    from hmrflow.priors.rotations import rot6d_to_matrix
    from hmrflow.stages.mesh.coarse_mesh import coarse_mesh_for
    from hmrflow.stages.mesh.head import N_JOINTS as K

    mesh = coarse_mesh_for(body_model, head.cfg.n_coarse)
    rot = rot6d_to_matrix(standing_mean_params()[0].reshape(1, K, ROT6D))
    out = body_model(rot.to(body_model.device), torch.zeros(1, N_BETAS, device=body_model.device))
    template = torch.cat([out.joints[0], out.vertices[0, torch.as_tensor(mesh.index)]], dim=0).cpu()
    head.set_topology(mesh, body_model.layer.J_regressor.detach().cpu(), template)
