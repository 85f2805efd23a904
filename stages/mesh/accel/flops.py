"""Analytic FLOPs of the mesh estimator (ViT backbone + SMPL head) per variant.

Counts the matrix products only (one multiply-add = 2 FLOPs): patch embedding, per block
``qkv``, ``q k^T``, ``attn v``, ``proj`` at the tokens entering the block and ``fc1``/``fc2``
at the tokens left after its merge (Mask-ToMe merges between attention and MLP), the
bipartite matching's similarity product, and the head's projections and attention over
the (merged) image tokens.  Norms, activations, softmax and adds are ignored (a few percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hmrflow.stages.mesh.backbone import ViTConfig
from hmrflow.stages.mesh.fastmetro import FastMETROConfig
from hmrflow.stages.mesh.head import HeadConfig


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per crop, split by part."""

    patch_embed: int
    blocks: int
    matching: int
    head: int

    @property
    def total(self) -> int:
        return self.patch_embed + self.blocks + self.matching + self.head

    def as_dict(self) -> dict[str, int]:
        return {
            "patch_embed": self.patch_embed,
            "blocks": self.blocks,
            "matching": self.matching,
            "head": self.head,
            "total": self.total,
        }


def block_flops(cfg: ViTConfig, n_in: int, n_out: Optional[int] = None) -> int:
    """FLOPs of one block: attention over ``n_in`` tokens, MLP over ``n_out`` (default n_in)."""
    c, hid = cfg.embed_dim, cfg.mlp_hidden
    n_out = n_in if n_out is None else n_out
    attn = 2 * n_in * c * 3 * c + 2 * 2 * n_in * n_in * c + 2 * n_in * c * c
    mlp = 2 * 2 * n_out * c * hid
    return attn + mlp


def matching_flops(cfg: ViTConfig, n_in: int) -> int:
    """FLOPs of the A x B cosine-similarity product on head-averaged keys (head_dim wide)."""
    hd = cfg.embed_dim // cfg.num_heads
    return 2 * ((n_in + 1) // 2) * (n_in // 2) * hd


def head_flops(cfg: HeadConfig, n_tokens: int) -> int:
    """FLOPs of the one-query decoder head over ``n_tokens`` image tokens."""
    d, inner, ctx = cfg.dim, cfg.inner_dim, cfg.context_dim
    self_attn = 2 * d * 3 * inner + 2 * 2 * inner + 2 * inner * d
    cross = 2 * d * inner + 2 * n_tokens * ctx * 2 * inner + 2 * 2 * n_tokens * inner + 2 * inner * d
    ff = 2 * 2 * d * cfg.mlp_dim
    readout = 2 * d * (24 * 6 + 10 + 3 + 1)
    return cfg.ief_iters * (cfg.depth * (self_attn + cross + ff) + readout)


def _attention_flops(n_q: int, n_k: int, d: int) -> int:
    return 2 * 2 * n_q * n_k * d


def fastmetro_flops(cfg: FastMETROConfig, n_tokens: int) -> int:
    """FLOPs of the FastMETRO head over ``n_tokens`` image tokens: input projection, per stage
    the encoder over the camera token + image tokens and the decoder over joint + vertex tokens
    (dense attention: a mask does not skip work), the reductions, the readouts and the SMPL
    regressor (the full-mesh upsampling is a sparse gather, left out)."""
    m, q = n_tokens + 1, cfg.n_tokens
    total = 2 * n_tokens * cfg.context_dim * cfg.dims[0]
    prev = None
    for d in cfg.dims:
        if prev is not None:
            total += 2 * (m + q) * prev * d
        hid = int(d * cfg.mlp_ratio)
        enc = 2 * m * d * 3 * d + _attention_flops(m, m, d) + 2 * m * d * d + 2 * 2 * m * d * hid
        dec = (
            2 * q * d * 3 * d
            + _attention_flops(q, q, d)
            + 2 * q * d * d
            + 2 * q * d * d
            + 2 * n_tokens * d * 2 * d
            + _attention_flops(q, n_tokens, d)
            + 2 * q * d * d
            + 2 * 2 * q * d * hid
        )
        total += cfg.layers * (enc + dec)
        prev = d
    r = cfg.regressor_dim
    total += 2 * q * cfg.dims[-1] * 3 + 2 * cfg.dims[-1] * 4
    total += 2 * (q * 3 * r + r * r + r * (24 * 6 + 10))
    return total


def estimator_flops(
    backbone: ViTConfig,
    head: HeadConfig | FastMETROConfig,
    depth: Optional[int] = None,
    block_tokens: Optional[Sequence[tuple[int, int]]] = None,
) -> FlopCount:
    """FLOPs per crop of an estimator.

    depth: blocks actually run (after ECLM); default ``backbone.depth``.
    block_tokens: per block (tokens entering, tokens after its merge); default no merging.
    """
    n = backbone.num_tokens
    depth = backbone.depth if depth is None else int(depth)
    if block_tokens is None:
        block_tokens = [(n, n)] * depth
    if len(block_tokens) != depth:
        raise ValueError(f"{len(block_tokens)} token counts for {depth} blocks")
    p = backbone.patch_size
    patch = 2 * n * 3 * p * p * backbone.embed_dim
    blocks = sum(block_flops(backbone, a, b) for a, b in block_tokens)
    matching = sum(matching_flops(backbone, a) for a, b in block_tokens if b < a)
    last = block_tokens[-1][1] if depth else n
    hf = fastmetro_flops(head, last) if isinstance(head, FastMETROConfig) else head_flops(head, last)
    return FlopCount(patch_embed=patch, blocks=blocks, matching=matching, head=hf)


def tome_token_counts(n: int, rs: Sequence[int], n_protected: int = 0) -> list[tuple[int, int]]:
    """Expected (tokens in, tokens out) per block for merge counts ``rs`` when ``n_protected``
    tokens (the person) are never merged: each block merges ``min(r, n // 2, free A tokens)``
    with the free tokens split evenly between the alternating sets A and B."""
    out = []
    for r in rs:
        free = n - n_protected
        cap = min(int(r), n // 2, free // 2 if free >= 2 else 0)
        m = max(cap, 0)
        out.append((n, n - m))
        n -= m
    return out


def model_flops(model, block_tokens: Optional[Sequence[tuple[int, int]]] = None) -> FlopCount:
    """:func:`estimator_flops` of a built ``MeshEstimator`` at its current depth."""
    bb = model.backbone
    return estimator_flops(bb.cfg, model.spec.head, depth=len(bb.blocks), block_tokens=block_tokens)


def onestage_flops(spec: Any, n_high: int, n_main: int) -> int:
    """FLOPs of one frame through the one-stage estimator
    (:class:`~hmrflow.stages.onestage.model.OneStageSpec` ``spec``): patch embedding and shallow
    encoder over the low-resolution grid, the same over the ``n_high`` high-resolution tokens
    encoded, the main encoder over its ``n_main`` tokens, and the query decoder (each of the
    ``spec.queries`` queries costed as the one-query head over ``n_main`` tokens)."""
    vit = ViTConfig(
        embed_dim=spec.embed_dim, depth=spec.shallow_depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio
    )
    gh, gw = spec.grid
    n_low = gh * gw
    embed = 2 * (n_low + n_high) * 3 * spec.patch_size**2 * spec.embed_dim
    shallow = spec.shallow_depth * (block_flops(vit, n_low) + (block_flops(vit, n_high) if n_high else 0))
    main = spec.main_depth * block_flops(vit, n_main)
    return embed + shallow + main + spec.queries * head_flops(spec.head_config, n_main)
