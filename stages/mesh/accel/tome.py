"""Mask-ToMe: token merging in the ViT backbone that never touches the person.

Between the attention and the MLP of each block, the ``r`` most similar background token
pairs (cosine similarity of the attention keys, averaged over heads) are merged by a
size-weighted average (:mod:`hmrflow.stages.mesh.accel.merge`).  Tokens under the person mask
are protected: never merged, never merged into.  Token sizes (how many patches a token
stands for) are tracked and used as *proportional attention*: ``log(size)`` is added to the
attention logits as an additive bias, so the fused ``scaled_dot_product_attention`` kernel
is kept.

**The head consumes the merged tokens with their sizes** (``context_bias = log(size)``) rather
than unmerging them.  The SMPL head's single query cross-attends to the tokens (no position
embedding on the context, so token order does not matter), and softmax attention over ``s``
identical copies of a key/value equals attention over one copy whose logit is raised by
``log(s)``.  Unmerging would therefore give the same result up to rounding (tested) while
costing ``N / (N - merged)`` times more key/value projections in every head layer.  The
unmerged path is kept (``head_input="unmerged"``) for comparison.

All per-call state (sizes, protect mask, source map) lives in a :class:`TokenState` created
inside each forward call and returned anew by every block: nothing is stored on modules, so a
model with Mask-ToMe applied is reentrant (threads, nested calls) and ``torch.compile``-able
(the data-dependent merge count is a graph break, not an error).

Usage::

    handle = apply_mask_tome(model, MaskToMeConfig(r=8))
    out = model(crops.images, protect=crops.token_masks)   # (B, gh, gw) coverage or (B, N) bool
    handle.remove()                                         # the model is exactly as before
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hmrflow.stages.mesh.accel.merge import bipartite_soft_matching
from hmrflow.stages.mesh.backbone import Block, ViTBackbone

Schedule = Literal["constant", "decreasing", "list"]
HeadInput = Literal["merged", "unmerged"]


@dataclass(frozen=True)
class MaskToMeConfig:
    """Mask-ToMe settings.

    r: merges per layer (``constant``), the mean merges per layer (``decreasing``: linear
        from ``2 r`` at the first block to 0 at the last, same total), or one value per block
        (``list``; a shorter list is padded with zeros).
    schedule: how ``r`` becomes per-layer merge counts.
    protect_threshold: a token is protected (person) when its mask coverage exceeds this.
    protect_dilate: grow the protected region by this many token cells (a safety margin).
    proportional_attention: add ``log(size)`` to attention logits of merged tokens.
    head_input: ``merged`` (tokens + ``log(size)`` bias, default) or ``unmerged``.
    group_size: if set, a batch is run as sub-batches of this many crops sorted by their
        protected-token count, so the merge cap (the least background in a sub-batch) is set
        by crops of similar person size instead of the one fullest crop of the whole batch.
    """

    r: int | tuple[int, ...] = 8
    schedule: Schedule = "constant"
    protect_threshold: float = 0.0
    protect_dilate: int = 0
    proportional_attention: bool = True
    head_input: HeadInput = "merged"
    group_size: Optional[int] = None

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "decreasing", "list"):
            raise ValueError(f"schedule must be constant, decreasing or list, got {self.schedule!r}")
        if self.head_input not in ("merged", "unmerged"):
            raise ValueError(f"head_input must be merged or unmerged, got {self.head_input!r}")
        if self.schedule == "list":
            if isinstance(self.r, int):
                raise ValueError("schedule 'list' needs r as a sequence of per-layer merge counts")
            object.__setattr__(self, "r", tuple(int(v) for v in self.r))
            if any(v < 0 for v in self.r):
                raise ValueError(f"merge counts must be >= 0, got {self.r}")
        elif not isinstance(self.r, int) or self.r < 0:
            raise ValueError(f"r must be an int >= 0 for schedule {self.schedule!r}, got {self.r!r}")
        if self.protect_dilate < 0:
            raise ValueError(f"protect_dilate must be >= 0, got {self.protect_dilate}")


def r_schedule(cfg: MaskToMeConfig, depth: int) -> list[int]:
    """Per-block merge counts (length ``depth``)."""
    if cfg.schedule == "list":
        rs = list(cfg.r)  # type: ignore[arg-type]
        if len(rs) > depth:
            raise ValueError(f"r schedule has {len(rs)} entries for a backbone of depth {depth}")
        return rs + [0] * (depth - len(rs))
    r = int(cfg.r)  # type: ignore[arg-type]
    if cfg.schedule == "constant":
        return [r] * depth
    if depth == 1:
        return [r]
    # linear 2r -> 0 over the blocks, rounded so that the total stays r * depth
    raw = [2.0 * r * (1.0 - i / (depth - 1)) for i in range(depth)]
    scale = r * depth / max(sum(raw), 1e-9)
    out, acc, given = [], 0.0, 0
    for v in raw:
        acc += v * scale
        k = int(math.floor(acc + 0.5)) - given
        out.append(max(k, 0))
        given += out[-1]
    return out


def protect_mask(token_masks: torch.Tensor, threshold: float = 0.0, dilate: int = 0) -> torch.Tensor:
    """Person coverage per token cell (B, gh, gw) (float in [0, 1] or bool) -> (B, gh*gw) bool
    (row-major, the backbone's token order): True where coverage > ``threshold``, grown by
    ``dilate`` cells."""
    if token_masks.ndim != 3:
        raise ValueError(f"token_masks must be (B, gh, gw), got {tuple(token_masks.shape)}")
    m = token_masks.float() > threshold if token_masks.dtype != torch.bool else token_masks
    if dilate > 0:
        k = 2 * dilate + 1
        m = F.max_pool2d(m[:, None].float(), k, stride=1, padding=dilate)[:, 0] > 0
    return m.flatten(1)


@dataclass(frozen=True)
class TokenState:
    """What travels with the tokens through one forward call.

    sizes: (B, N, 1) float32 patches per token, or None while nothing is merged (all ones).
    protect: (B, N) bool, or None (nothing protected).
    source: (B, N0) long, the current position of each original patch token, or None
        (identity, nothing merged yet).
    """

    sizes: Optional[torch.Tensor] = None
    protect: Optional[torch.Tensor] = None
    source: Optional[torch.Tensor] = None

    def attn_bias(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """(B, 1, 1, N) ``log(size)`` additive bias, or None while nothing is merged."""
        if self.sizes is None:
            return None
        return self.sizes[:, None, None, :, 0].log().to(dtype)


@dataclass(frozen=True)
class MergedTokens:
    """Backbone output under Mask-ToMe.

    tokens: (B, N', C) last-normed tokens.  sizes: (B, N') float32 (sum = N per sample).
    source: (B, N) long, the merged token each original patch token went to.
    block_tokens: per block (tokens entering it, tokens after its merge), for FLOP counts.
    """

    tokens: torch.Tensor
    sizes: torch.Tensor
    source: torch.Tensor
    block_tokens: tuple[tuple[int, int], ...] = ()

    def unmerge(self) -> torch.Tensor:
        """(B, N, C): each original position gets its merged token."""
        return self.tokens.gather(1, self.source[..., None].expand(-1, -1, self.tokens.shape[-1]))


def tome_block(
    block: Block, x: torch.Tensor, state: TokenState, r: int, proportional_attention: bool = True
) -> tuple[torch.Tensor, TokenState]:
    """One transformer block with a merge between attention and MLP.

    x: (B, N, C) -> ((B, N - r', C), new state); ``r' <= r`` after the protect cap.  With
    ``r == 0`` and nothing merged before, this performs exactly the operations of
    ``block(x)`` (bit-identical).
    """
    bias = state.attn_bias(x.dtype) if proportional_attention else None
    q, k, v = block.attn.project_qkv(block.norm1(x))
    x = x + block.drop_path(block.attn.attend(q, k, v, bias))
    if r > 0:
        match = bipartite_soft_matching(k.mean(dim=1), r, state.protect)
        if match.r > 0:
            b, n, _ = x.shape
            sizes = state.sizes if state.sizes is not None else x.new_ones(b, n, 1, dtype=torch.float32)
            x, sizes = match.merge_weighted(x, sizes)
            pos = match.new_positions()
            source = pos if state.source is None else pos.gather(1, state.source)
            protect = None if state.protect is None else match.keep_protected(state.protect)
            state = TokenState(sizes=sizes, protect=protect, source=source)
    x = x + block.drop_path(block.mlp(block.norm2(x)))
    return x, state


def tome_features(
    backbone: ViTBackbone,
    crops: torch.Tensor,
    rs: Sequence[int],
    protect: Optional[torch.Tensor] = None,
    proportional_attention: bool = True,
) -> MergedTokens:
    """Backbone forward with merging: crops (B, 3, H, W), per-block merge counts ``rs``,
    protect (B, N) bool -> :class:`MergedTokens`."""
    if len(rs) != len(backbone.blocks):
        raise ValueError(f"{len(rs)} merge counts for {len(backbone.blocks)} blocks")
    x = backbone.embed(crops)
    b, n, _ = x.shape
    if protect is not None and tuple(protect.shape) != (b, n):
        raise ValueError(f"protect must be ({b}, {n}) bool for these crops, got {tuple(protect.shape)}")
    state = TokenState(protect=protect)
    counts = []
    for blk, r in zip(backbone.blocks, rs):
        n_in = x.shape[1]
        x, state = tome_block(blk, x, state, int(r), proportional_attention)
        counts.append((n_in, x.shape[1]))
    x = backbone.last_norm(x)
    sizes = state.sizes[..., 0] if state.sizes is not None else x.new_ones(b, n, dtype=torch.float32)
    source = state.source if state.source is not None else torch.arange(n, device=x.device).expand(b, -1)
    return MergedTokens(tokens=x, sizes=sizes, source=source, block_tokens=tuple(counts))


def resolve_protect(protect: Optional[torch.Tensor], cfg: MaskToMeConfig) -> Optional[torch.Tensor]:
    """``protect`` as given to the model: None, (B, N) bool, or (B, gh, gw) coverage -> (B, N) bool."""
    if protect is None:
        return None
    if protect.ndim == 3:
        return protect_mask(protect, cfg.protect_threshold, cfg.protect_dilate)
    if protect.ndim == 2 and protect.dtype == torch.bool:
        return protect
    raise ValueError(
        f"protect must be (B, N) bool or (B, gh, gw) token coverage, got {tuple(protect.shape)} {protect.dtype}"
    )


def tome_forward(model: nn.Module, crops: torch.Tensor, protect: Optional[torch.Tensor], cfg: MaskToMeConfig):
    """The estimator forward under Mask-ToMe: crops (B, 3, H, W), protect (see
    :func:`resolve_protect`) -> ``EstimatorOutput``."""
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"crops must be (B, 3, H, W), got {tuple(crops.shape)}")
    protect = resolve_protect(protect, cfg)
    if cfg.group_size and protect is not None and crops.shape[0] > cfg.group_size:
        order = protect.sum(dim=1).argsort(stable=True)
        parts = [_tome_forward_batch(model, crops[idx], protect[idx], cfg) for idx in order.split(cfg.group_size)]
        inverse = order.argsort()
        return type(parts[0]).cat(parts, inverse)
    return _tome_forward_batch(model, crops, protect, cfg)


def _tome_forward_batch(model: nn.Module, crops: torch.Tensor, protect: Optional[torch.Tensor], cfg: MaskToMeConfig):
    backbone = model.backbone
    rs = r_schedule(cfg, len(backbone.blocks))
    merged = tome_features(backbone, crops, rs, protect, cfg.proportional_attention)
    if cfg.head_input == "unmerged":
        return model.forward_head(merged.unmerge())
    n_orig = merged.source.shape[1]
    if merged.tokens.shape[1] == n_orig:  # nothing merged: exactly the plain head call
        return model.forward_head(merged.tokens)
    return model.forward_head(merged.tokens, merged.sizes[:, None, None, :].log())


def _tome_model_forward(
    model: nn.Module, cfg: MaskToMeConfig, crops: torch.Tensor, protect: Optional[torch.Tensor] = None
):
    return tome_forward(model, crops, protect, cfg)


@dataclass
class MaskToMeHandle:
    """Returned by :func:`apply_mask_tome`; ``remove()`` (or leaving a ``with`` block) restores
    the model's own forward."""

    model: nn.Module
    cfg: MaskToMeConfig
    _active: bool = field(default=True, repr=False)

    def remove(self) -> None:
        if self._active:
            if self.model.__dict__.get("forward") is not None and getattr(self.model.forward, "_mask_tome", False):
                del self.model.forward
            self._active = False

    def __enter__(self) -> "MaskToMeHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def is_mask_tome_applied(model: nn.Module) -> bool:
    return bool(getattr(model.__dict__.get("forward"), "_mask_tome", False))


def apply_mask_tome(model: nn.Module, cfg: MaskToMeConfig | None = None) -> MaskToMeHandle:
    """Make ``model(crops, protect=None)`` run with Mask-ToMe.

    model: a :class:`~hmrflow.stages.mesh.model.MeshEstimator` (anything with ``backbone``
    (a ViTBackbone) and ``forward_head(tokens, context_bias)``).  Only the instance's
    ``forward`` is overridden (no class swap, no module or weight change); the blocks are read
    at call time, so layer merging (ECLM) applied before or after composes with it.
    """
    cfg = cfg or MaskToMeConfig()
    if not isinstance(getattr(model, "backbone", None), ViTBackbone):
        raise TypeError(f"apply_mask_tome needs a model with a ViTBackbone `backbone`, got {type(model).__name__}")
    if is_mask_tome_applied(model):
        raise RuntimeError("Mask-ToMe is already applied to this model; remove the first handle first")
    r_schedule(cfg, len(model.backbone.blocks))  # validate now
    fwd = functools.partial(_tome_model_forward, model, cfg)
    fwd._mask_tome = True  # type: ignore[attr-defined]
    model.forward = fwd  # instance attribute: nn.Module.__call__ dispatches to it
    return MaskToMeHandle(model, cfg)
