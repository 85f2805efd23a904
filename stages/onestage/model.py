"""The one-stage multi-person mesh estimator (SAT-HMR layout) on the project's ViT blocks.

Full image in, people out.  Facts from the SAT-HMR paper summary (``../shared/seeds``); the
code and the small sizes are ours:

1. The image at low resolution is cut into patch tokens that pass a **shallow encoder**; a
   **scale head** reads each token's ``(c, s)``: person confidence and the person's scale
   ``s = min(box diagonal / longest image side, 1)``.
2. :func:`~hmrflow.stages.onestage.tokens.select_tokens` keeps large people at low
   resolution, replaces small people's tokens by their four tokens of the 2x image (patch
   embedded and passed through the *same* shallow encoder) and pools the background 2x2.
3. The mixed token set passes the **main encoder** (the project's :class:`Block`, with
   ``log(token area)`` as attention bias so a pooled token weighs as the four it replaced),
   then a **decoder** of learned person queries (the SMPL head's decoder layers) reads, per
   query: a detection logit, the box, SMPL pose (6D, residual to a standing body) and shape,
   the 2D position of the pelvis and its depth normalised by the focal length.

Because the encoder blocks are :class:`~hmrflow.stages.mesh.backbone.Block`, ECLM's layer
merging (:func:`~hmrflow.stages.mesh.accel.eclm.merge_blocks`) applies to them unchanged.

Image convention: frames are letterboxed (top-left, zero padding) into the high-resolution
input ``(2H, 2W)``; the low-resolution input is that image halved.  Boxes and the pelvis
position are predicted in units of the high-resolution input's width and height (0..1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hmrflow.priors.rotations import rot6d_to_matrix
from hmrflow.stages.mesh.backbone import Block, PatchEmbed, init_linears_and_norms
from hmrflow.stages.mesh.head import N_BETAS, N_JOINTS, ROT6D, DecoderLayer, HeadConfig, standing_mean_params
from hmrflow.stages.onestage.tokens import HIGH_RES, Mode, ScaleAdaptiveTokens, select_tokens


@dataclass(frozen=True)
class OneStageSpec:
    """Shape of a one-stage estimator.

    low_size: (H, W) of the low-resolution input (the high-resolution input is twice that);
    both divided by ``patch_size`` must give even grids.  ``alpha_c`` / ``alpha_s``: the
    token-split thresholds on person confidence and scale.
    """

    name: str = "tiny"
    embed_dim: int = 192
    num_heads: int = 3
    mlp_ratio: float = 2.0
    shallow_depth: int = 3
    main_depth: int = 3
    patch_size: int = 16
    low_size: tuple[int, int] = (192, 256)
    queries: int = 24
    decoder_dim: int = 192
    decoder_depth: int = 2
    decoder_heads: int = 4
    alpha_c: float = 0.5
    alpha_s: float = 0.2

    def __post_init__(self) -> None:
        gh, gw = self.grid
        if self.low_size[0] % self.patch_size or self.low_size[1] % self.patch_size or gh % 2 or gw % 2:
            raise ValueError(
                f"low_size {self.low_size} must be a multiple of patch_size {self.patch_size} with even token grid sides"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) low-resolution token grid."""
        return self.low_size[0] // self.patch_size, self.low_size[1] // self.patch_size

    @property
    def high_size(self) -> tuple[int, int]:
        """(H, W) of the high-resolution input (the letterbox target)."""
        return 2 * self.low_size[0], 2 * self.low_size[1]

    @property
    def head_config(self) -> HeadConfig:
        """The query decoder's layers, in the SMPL head's config terms."""
        return HeadConfig(
            context_dim=self.embed_dim,
            dim=self.decoder_dim,
            depth=self.decoder_depth,
            heads=self.decoder_heads,
            dim_head=self.decoder_dim // self.decoder_heads,
            mlp_dim=2 * self.decoder_dim,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OneStageSpec":
        d = dict(d)
        d["low_size"] = tuple(d["low_size"])
        return cls(**d)


#: Sizes by name.  ``tiny`` trains on 2 CPU cores (its blocks have the tiny crop estimator's
#: shape, so they can start from its weights); ``paper`` is SAT-HMR's depth (3 + 9) at ViT-B width.
SIZES: dict[str, OneStageSpec] = {
    # alpha_c 0.3, not the paper's 0.5: a focal-loss-trained map is under-confident
    "tiny": OneStageSpec(alpha_c=0.3),
    "paper": OneStageSpec(
        name="paper",
        embed_dim=768,
        num_heads=12,
        mlp_ratio=4.0,
        shallow_depth=3,
        main_depth=9,
        low_size=(448, 640),
        queries=50,
        decoder_dim=512,
        decoder_depth=6,
        decoder_heads=8,
    ),
}


@dataclass
class OneStageOutput:
    """Raw predictions for B images and Q queries.

    logits: (B, Q) detection logits; boxes: (B, Q, 4) (cx, cy, w, h) in input units (0..1);
    rotmats: (B, Q, 24, 3, 3) camera-frame SMPL rotations (joint 0 = global orientation);
    pose6d: (B, Q, 24, 6); betas: (B, Q, 10); root_uv: (B, Q, 2) pelvis in input units;
    log_depth: (B, Q) log of pelvis depth divided by the relative focal length
    (focal / longest input side); scale_conf: (B, gh, gw) logits; scale: (B, gh, gw) in 0..1;
    tokens: the token set the main encoder saw; token_obj: (B, M) objectness logits of those
    tokens (-inf on padding), which picked the queries; ref: (B, Q, 2) (x, y) 0..1, the centre of
    each query's token.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    rotmats: torch.Tensor
    pose6d: torch.Tensor
    betas: torch.Tensor
    root_uv: torch.Tensor
    log_depth: torch.Tensor
    scale_conf: torch.Tensor
    scale: torch.Tensor
    tokens: ScaleAdaptiveTokens
    token_obj: torch.Tensor
    ref: torch.Tensor


def _grid_pos(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, gh0*gw0, C) position embedding on a square-ish grid resized to ``grid`` -> (1, gh*gw, C)."""
    n, c = pos.shape[1], pos.shape[2]
    gh0 = int(round(math.sqrt(n)))
    while n % gh0:
        gh0 -= 1
    img = pos.reshape(1, gh0, n // gh0, c).permute(0, 3, 1, 2)
    out = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], c)


class OneStageEstimator(nn.Module):
    """SAT-HMR-style estimator: ``forward(images_high) -> OneStageOutput`` (see module docstring)."""

    def __init__(self, spec: OneStageSpec) -> None:
        super().__init__()
        self.spec = spec
        c = spec.embed_dim
        hidden = int(c * spec.mlp_ratio)
        gh, gw = spec.grid
        self.patch_embed = PatchEmbed(spec.patch_size, 0, c)
        self.pos_low = nn.Parameter(torch.zeros(1, gh * gw, c))
        self.pos_high = nn.Parameter(torch.zeros(1, 4 * gh * gw, c))
        self.shallow = nn.ModuleList(Block(c, spec.num_heads, hidden) for _ in range(spec.shallow_depth))
        self.shallow_norm = nn.LayerNorm(c, eps=1e-6)
        self.scale_head = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, 2))
        self.kind_embed = nn.Parameter(torch.zeros(3, c))
        self.blocks = nn.ModuleList(Block(c, spec.num_heads, hidden) for _ in range(spec.main_depth))
        self.last_norm = nn.LayerNorm(c, eps=1e-6)
        self.head_cfg = spec.head_config
        # queries start from the encoder's most person-like tokens (Deformable-DETR's two-stage
        # query selection): each query begins where a person is, which a 2-core training budget needs
        self.token_obj = nn.Linear(c, 1)
        self.query_in = nn.Linear(c, spec.decoder_dim)
        self.query = nn.Parameter(torch.zeros(1, spec.queries, spec.decoder_dim))
        self.ref_embed = nn.Sequential(
            nn.Linear(2, spec.decoder_dim), nn.GELU(), nn.Linear(spec.decoder_dim, spec.decoder_dim)
        )
        self.decoder = nn.ModuleList(DecoderLayer(self.head_cfg) for _ in range(spec.decoder_depth))
        self.dec_norm = nn.LayerNorm(spec.decoder_dim)
        d = spec.decoder_dim
        self.cls_out = nn.Linear(d, 1)
        self.box_out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 4))
        self.pose_out = nn.Linear(d, N_JOINTS * ROT6D)
        self.shape_out = nn.Linear(d, N_BETAS)
        self.root_out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 3))
        pose6d, betas, _ = standing_mean_params()
        self.register_buffer("init_pose", pose6d)
        self.register_buffer("init_betas", betas)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linears_and_norms(self)
        for p in (self.pos_low, self.pos_high, self.query, self.kind_embed):
            nn.init.trunc_normal_(p, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=1.0 / math.sqrt(w[0].numel()))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in (self.pose_out, self.shape_out):
            nn.init.xavier_uniform_(m.weight, gain=0.01)
            nn.init.zeros_(m.bias)
        # a prior of 1 % on detections (RetinaNet's focal-loss start) and a mid-range depth
        nn.init.constant_(self.cls_out.bias, -math.log(99.0))
        nn.init.constant_(self.token_obj.bias, -math.log(9.0))
        nn.init.constant_(self.scale_head[-1].bias, 0.0)
        with torch.no_grad():
            self.scale_head[-1].bias[0] = -math.log(4.0)
            self.root_out[-1].bias.copy_(torch.tensor([0.0, 0.0, math.log(6.0)]))

    def init_from_estimator(self, backbone: nn.Module) -> int:
        """Copy a crop estimator's ViT (same width) into the encoders: its first blocks into the
        shallow encoder, the next ones into the main encoder, the patch embedding and the
        position embedding resized to both grids.  Returns the number of blocks copied."""
        src = list(backbone.blocks)
        dst = list(self.shallow) + list(self.blocks)
        n = min(len(src), len(dst))
        a, b = src[0].state_dict(), dst[0].state_dict()
        if {k: v.shape for k, v in a.items()} != {k: v.shape for k, v in b.items()}:
            raise ValueError("the crop estimator's ViT block shapes differ from the one-stage model's (width or MLP)")
        for s, d in zip(src[:n], dst[:n]):
            d.load_state_dict(s.state_dict())
        with torch.no_grad():
            pw = backbone.patch_embed.proj.weight
            if pw.shape == self.patch_embed.proj.weight.shape:
                self.patch_embed.proj.weight.copy_(pw)
                self.patch_embed.proj.bias.copy_(backbone.patch_embed.proj.bias)
            gh, gw = self.spec.grid
            self.pos_low.copy_(_grid_pos(backbone.pos_embed, (gh, gw)))
            self.pos_high.copy_(_grid_pos(backbone.pos_embed, (2 * gh, 2 * gw)))
            self.shallow_norm.load_state_dict(backbone.last_norm.state_dict())
            self.last_norm.load_state_dict(backbone.last_norm.state_dict())
        return n

    # ------------------------------------------------------------------ parts
    def encode_low(self, low: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) low-resolution input -> shallow-encoded tokens (B, gh*gw, C)."""
        x = self.patch_embed(low) + self.pos_low.to(low.dtype)
        for blk in self.shallow:
            x = blk(x)
        return x

    def scale_map(self, low_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shallow tokens (B, gh*gw, C) -> confidence logits and scale, each (B, gh, gw)."""
        gh, gw = self.spec.grid
        out = self.scale_head(self.shallow_norm(low_tokens)).float()
        b = out.shape[0]
        return out[..., 0].reshape(b, gh, gw), torch.sigmoid(out[..., 1]).reshape(b, gh, gw)

    def encode_high(self, high: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
        """High-resolution tokens where needed: (B, 3, 2H, 2W) input and (B, gh, gw) bool small-person
        cells -> (B, 2gh, 2gw, C), the shallow-encoded tokens under the small cells (zero elsewhere).

        Only the selected tokens are encoded (each image's set attends within itself), which is
        what keeps the high-resolution pass cheap when few people are small."""
        b = high.shape[0]
        gh, gw = self.spec.grid
        c = self.spec.embed_dim
        out = high.new_zeros(b, 2 * gh, 2 * gw, c)
        cells = small.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (B, 2gh, 2gw)
        counts = cells.flatten(1).sum(1)
        m = int(counts.max()) if b else 0
        if m == 0:
            return out
        # patches only where selected: unfold the image, not a full-image convolution
        p = self.spec.patch_size
        patches = F.unfold(high, kernel_size=p, stride=p).transpose(1, 2)  # (B, 4*gh*gw, 3*p*p)
        wflat = self.patch_embed.proj.weight.reshape(c, -1)
        flat = cells.flatten(1)
        order = torch.argsort((~flat).to(torch.int8), dim=1, stable=True)[:, :m]  # selected first
        sel = torch.gather(patches, 1, order[..., None].expand(-1, -1, patches.shape[-1]))
        x = sel @ wflat.t().to(sel.dtype) + self.patch_embed.proj.bias.to(sel.dtype)
        x = x + self.pos_high.to(x.dtype)[0][order]
        valid = torch.arange(m)[None] < counts[:, None]
        bias = torch.zeros(b, 1, 1, m, dtype=x.dtype, device=x.device).masked_fill(~valid[:, None, None], float("-inf"))
        for blk in self.shallow:
            x = blk(x, bias)
        o = out.reshape(b, 4 * gh * gw, c)
        for i in range(b):
            k = int(counts[i])
            o[i, order[i, :k]] = x[i, :k]
        return o.reshape(b, 2 * gh, 2 * gw, c)

    def encode_main(self, toks: ScaleAdaptiveTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed tokens -> encoded context (B, M, C) and its attention bias (B, 1, 1, M)."""
        kind = toks.kind.clamp(min=0)
        x = toks.tokens + self.kind_embed[kind].to(toks.tokens.dtype)
        bias = torch.where(toks.valid, toks.sizes.clamp(min=1e-6).log(), torch.full_like(toks.sizes, float("-inf")))
        bias = bias[:, None, None, :].to(x.dtype)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.last_norm(x), bias

    def decode(self, context: torch.Tensor, bias: torch.Tensor, toks: ScaleAdaptiveTokens) -> dict[str, torch.Tensor]:
        """Person queries read the context: per-query raw outputs.

        The Q queries start from the Q tokens with the highest objectness (padding never
        chosen); each query's box centre and pelvis are offsets from its token's centre."""
        b = context.shape[0]
        gh, gw = self.spec.grid
        obj = self.token_obj(context).float()[..., 0].masked_fill(~toks.valid, float("-inf"))
        k = min(self.spec.queries, context.shape[1])
        top = obj.topk(k, dim=1).indices  # (B, k)
        picked = torch.gather(context, 1, top[..., None].expand(-1, -1, context.shape[-1]))
        ref = torch.gather(toks.centres, 1, top[..., None].expand(-1, -1, 2))  # (row, col) grid units
        ref = torch.stack([(ref[..., 1] + 0.5) / gw, (ref[..., 0] + 0.5) / gh], dim=-1).clamp(0, 1)  # (x, y) 0..1
        q = self.query_in(picked) + self.query[:, :k].to(context.dtype) + self.ref_embed(ref.to(context.dtype))
        for layer in self.decoder:
            q = layer(q, context, bias)
        q = self.dec_norm(q).float()
        n = q.shape[1]
        pose6d = self.pose_out(q).reshape(b, n, N_JOINTS, ROT6D) + self.init_pose.reshape(N_JOINTS, ROT6D)
        root = self.root_out(q)
        box = self.box_out(q)
        logit_ref = torch.logit(ref.float().clamp(1e-4, 1 - 1e-4))
        return {
            "logits": self.cls_out(q)[..., 0],
            "boxes": torch.cat([torch.sigmoid(box[..., :2] + logit_ref), torch.sigmoid(box[..., 2:] - 2.0)], -1),
            "pose6d": pose6d,
            "betas": self.shape_out(q) + self.init_betas,
            "root_uv": torch.sigmoid(root[..., :2] + logit_ref),
            "log_depth": root[..., 2],
            "token_obj": obj,
            "ref": ref.float(),
        }

    def forward(
        self,
        high: torch.Tensor,
        mode: Mode = "adaptive",
        scale_targets: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> OneStageOutput:
        """high: (B, 3, 2H, 2W) normalised letterboxed images.  ``scale_targets``: (conf, scale)
        maps (B, gh, gw) to split the tokens by instead of the predicted ones (training)."""
        spec = self.spec
        low = F.avg_pool2d(high, 2)
        low_tok = self.encode_low(low)
        conf_logit, scale = self.scale_map(low_tok)
        split_c, split_s = (torch.sigmoid(conf_logit), scale) if scale_targets is None else scale_targets
        split_c, split_s = split_c.detach(), split_s.detach()
        gh, gw = spec.grid
        person = split_c >= spec.alpha_c
        small = person & (split_s < spec.alpha_s)
        if mode == "all_high":
            small = torch.ones_like(small)
        elif mode == "all_low":
            small = torch.zeros_like(small)
        high_tok = self.encode_high(high, small)
        toks = select_tokens(
            low_tok.reshape(-1, gh, gw, spec.embed_dim),
            high_tok,
            split_c,
            split_s,
            spec.alpha_c,
            spec.alpha_s,
            mode=mode,
        )
        context, bias = self.encode_main(toks)
        out = self.decode(context, bias, toks)
        return OneStageOutput(
            rotmats=rot6d_to_matrix(out["pose6d"]),
            scale_conf=conf_logit,
            scale=scale,
            tokens=toks,
            **out,
        )


def high_res_token_count(toks: ScaleAdaptiveTokens) -> torch.Tensor:
    """(B,) number of high-resolution tokens in each image's set."""
    return ((toks.kind == HIGH_RES) & toks.valid).sum(1)
