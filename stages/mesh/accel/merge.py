"""Bipartite soft matching (ToMe) as pure functions, restricted to unprotected tokens.

The idea follows Bolya et al., "Token Merging: Your ViT but Faster" (ICLR 2023; read in
facebookresearch/ToMe ``tome/merge.py``); the code here is our own and differs on purpose:

* ``protect`` (B, N) bool marks tokens that must never be merged (Mask-ToMe: the person).
  Their similarity scores are ``-inf`` both as a source (set A) and as a destination (set B),
  so a person token neither disappears into another token nor absorbs background.
* ``r`` is capped by the mergeable tokens available: every sample of the batch must keep the
  same token count, so the batch merges ``min(r, min over samples of its mergeable A tokens)``.
  A crop that is all person therefore stops merging for its whole batch rather than merging a
  person token (the estimator stage can batch crops of similar background fraction).
* The functions return the index bookkeeping explicitly (:class:`Matching`) instead of keeping
  any state: callers thread sizes, protect masks and the source map through their own call.

Shapes: B batch, N tokens before the merge, r merged tokens, N - r after it, C channels.
Tokens are split alternately: set A = even positions, set B = odd positions.  After a merge
the order is ``[unmerged A tokens (in their original order), all B tokens]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

MergeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Matching:
    """The result of one bipartite matching step (no tensors are modified in place).

    r: number of A tokens merged into B tokens (the same for the whole batch).
    n_in: token count before the merge (N).
    unm_idx: (B, Na - r) long, positions in set A of the tokens kept, ascending.
    src_idx: (B, r) long, positions in set A of the merged tokens.
    dst_idx: (B, r) long, positions in set B each merged token goes to.
    """

    r: int
    n_in: int
    unm_idx: torch.Tensor
    src_idx: torch.Tensor
    dst_idx: torch.Tensor

    @property
    def n_out(self) -> int:
        return self.n_in - self.r

    def merge(self, x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
        """(B, N, C) -> (B, N - r, C); merged A tokens are reduced into their B token
        (``mode`` "sum", "mean", "amax" ... as in ``Tensor.scatter_reduce``)."""
        if self.r == 0:
            return x
        a = x[:, ::2]
        c = x.shape[-1]
        unm = a.gather(1, self.unm_idx[..., None].expand(-1, -1, c))
        src = a.gather(1, self.src_idx[..., None].expand(-1, -1, c))
        if mode == "sum":  # row-wise index_add on a private copy of B: much faster than scatter_reduce on CPU
            bsz, nb = x.shape[0], x.shape[1] // 2
            b = x[:, 1::2].clone(memory_format=torch.contiguous_format).view(bsz * nb, c)
            flat = (self.dst_idx + torch.arange(bsz, device=x.device)[:, None] * nb).reshape(-1)
            b = b.index_add_(0, flat, src.reshape(-1, c)).view(bsz, nb, c)
        else:
            b = x[:, 1::2].scatter_reduce(
                1, self.dst_idx[..., None].expand(-1, -1, c), src, reduce=mode, include_self=True
            )
        return torch.cat([unm, b], dim=1)

    def merge_weighted(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Size-weighted average: x (B, N, C), size (B, N, 1) -> (merged x, merged size fp32).

        Short sequences (N <= 64, e.g. the 48 tokens of a 128x96 crop) use one batched matmul
        with the 0/1 assignment matrix scaled by the (small integer, hence exact) sizes: on a CPU
        that is several times faster than gathers and scatters, especially in bf16.  Longer ones
        use gathers and a row-wise ``index_add``.  Both give the same values up to rounding."""
        if self.r == 0:
            return x, size
        total = self.merge(size.float(), "sum")
        if x.shape[1] <= 64:
            weights = (F.one_hot(self.new_positions(), self.n_out).to(x.dtype) * size.to(x.dtype)).transpose(1, 2)
            return torch.bmm(weights, x) / total.to(x.dtype), total
        return self.merge(x * size.to(x.dtype), "sum") / total.to(x.dtype), total

    def keep_protected(self, protect: torch.Tensor) -> torch.Tensor:
        """(B, N) bool -> (B, N - r) for the ``protect`` mask this matching was made with: its
        tokens were never a source or a destination, so every output token keeps its own flag
        (a gather; equal to :meth:`merge_mask` for that mask, tested)."""
        if self.r == 0:
            return protect
        return torch.cat([protect[:, ::2].gather(1, self.unm_idx), protect[:, 1::2]], dim=1)

    def merge_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) bool -> (B, N - r): a merged token is marked if any of its parts is."""
        if self.r == 0:
            return mask
        return self.merge(mask[..., None].to(torch.uint8), "amax")[..., 0].bool()

    def new_positions(self) -> torch.Tensor:
        """(B, N) long: where each input token ends up after the merge (merged A tokens point
        to their destination B token).  Computed once per matching (the weighted merge and the
        source map of a block both need it)."""
        cached = self.__dict__.get("_positions")
        if cached is None:
            cached = self._positions_uncached()
            object.__setattr__(self, "_positions", cached)
        return cached

    def _positions_uncached(self) -> torch.Tensor:
        n = self.n_in
        bsz = self.unm_idx.shape[0]
        dev = self.unm_idx.device
        na = (n + 1) // 2
        n_unm = na - self.r
        pos_a = torch.empty(bsz, na, dtype=torch.long, device=dev)
        pos_a.scatter_(1, self.unm_idx, torch.arange(n_unm, device=dev).expand(bsz, -1))
        pos_a.scatter_(1, self.src_idx, n_unm + self.dst_idx)
        pos_b = (n_unm + torch.arange(n // 2, device=dev)).expand(bsz, -1)
        out = torch.empty(bsz, n, dtype=torch.long, device=dev)
        out[:, ::2] = pos_a
        out[:, 1::2] = pos_b
        return out

    def unmerge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N - r, C) -> (B, N, C): every input position gets the value of the token it went to."""
        if self.r == 0:
            return x
        pos = self.new_positions()
        return x.gather(1, pos[..., None].expand(-1, -1, x.shape[-1]))


def mergeable_count(
    protect: Optional[torch.Tensor], n: int, batch: int, device: torch.device | None = None
) -> torch.Tensor:
    """(B,) long: A tokens of each sample that could be merged (unprotected, with at least one
    unprotected B token to go to)."""
    na = (n + 1) // 2
    if protect is None:
        return torch.full((batch,), min(na, n // 2), dtype=torch.long, device=device)
    free_a = (~protect[:, ::2]).sum(-1)
    has_b = (~protect[:, 1::2]).any(-1)
    return torch.where(has_b, free_a, torch.zeros_like(free_a))


def bipartite_soft_matching(
    metric: torch.Tensor,
    r: int,
    protect: Optional[torch.Tensor] = None,
) -> Matching:
    """Match the ``r`` most similar A -> B pairs by cosine similarity of ``metric``.

    metric: (B, N, C) features to compare (ToMe uses the attention keys, averaged over heads).
    r: requested merges; capped at ``N // 2`` and at the unprotected A tokens of every sample.
    protect: optional (B, N) bool, True = never merge (as source or destination).
    Returns a :class:`Matching`; ``r`` there is the number of merges actually made.
    """
    bsz, n, _ = metric.shape
    if protect is not None and tuple(protect.shape) != (bsz, n):
        raise ValueError(f"protect must be ({bsz}, {n}) bool, got {tuple(protect.shape)}")
    r = max(0, min(int(r), n // 2))
    if r > 0:
        r = min(r, int(mergeable_count(protect, n, bsz, metric.device).min()))
    dev = metric.device
    na = (n + 1) // 2
    if r == 0:
        empty = torch.zeros(bsz, 0, dtype=torch.long, device=dev)
        return Matching(0, n, torch.arange(na, device=dev).expand(bsz, -1), empty, empty)
    with torch.autocast(device_type=dev.type, enabled=False):
        m = metric.float()
        m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        a, b = m[:, ::2], m[:, 1::2]
        scores = a @ b.transpose(1, 2)  # (B, Na, Nb)
        if protect is not None:
            blocked = protect[:, ::2, None] | protect[:, None, 1::2]
            scores = scores.masked_fill(blocked, float("-inf"))
        best, best_dst = scores.max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True)
    src_idx = order[:, :r]
    unm_idx = order[:, r:].sort(dim=-1).values
    dst_idx = best_dst.gather(1, src_idx)
    return Matching(r, n, unm_idx, src_idx, dst_idx)


def merge_fns(
    metric: torch.Tensor,
    r: int,
    protect: Optional[torch.Tensor] = None,
    sizes: Optional[torch.Tensor] = None,
) -> tuple[MergeFn, MergeFn]:
    """The ``(metric, r, protect, sizes) -> (merge, unmerge)`` form of :func:`bipartite_soft_matching`.

    merge: (B, N, C) -> (B, N - r', C), the size-weighted average of the merged tokens
    (``sizes`` (B, N) or (B, N, 1); None = every token has size 1).  The merged sizes are
    ``bipartite_soft_matching(...).merge(sizes, "sum")``.
    unmerge: (B, N - r', C) -> (B, N, C), each position gets the token it was merged into.
    ``r'`` is the capped number of merges (see :func:`bipartite_soft_matching`).
    """
    match = bipartite_soft_matching(metric, r, protect)
    if sizes is None:
        sizes = torch.ones(metric.shape[0], metric.shape[1], 1, device=metric.device)
    elif sizes.ndim == 2:
        sizes = sizes[..., None]
    weights = sizes

    def merge(x: torch.Tensor) -> torch.Tensor:
        return match.merge_weighted(x, weights)[0]

    return merge, match.unmerge
