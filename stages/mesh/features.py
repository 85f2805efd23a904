"""The compact per-person image feature the estimator hands to refinement.

The SMPL head's final query token (:class:`~hmrflow.stages.mesh.head.HeadOutput` ``query``,
width ``dim``) has read everything the head uses from the image tokens, so it is what the
motion prior's denoiser is conditioned on beside the per-frame estimate (the FastHMR design,
with the head's token instead of the 1024-d backbone average).  It is carried as
``FEATURE_DIM`` values per row (float16: 256 bytes) from the estimate stage through tracking
to refinement, so no image crosses a process boundary.

Heads at most ``FEATURE_DIM`` wide are carried as they are (zero-padded); wider heads (ViT-H
HMR2.0: 1024) are projected by a fixed orthonormal matrix drawn from a seeded generator, so
every process and machine computes the same projection without a file.  A denoiser is tied
to the estimator whose features it was trained on: the prior records that estimator's
weights hash and refinement ignores the features of any other estimator (see
:mod:`hmrflow.stages.refine.stage`).
"""

from __future__ import annotations

import functools

import torch

from hmrflow.pipeline.types import FEATURE_DIM

#: seed of the fixed projection of wide query tokens
PROJECTION_SEED = 20261203


@functools.lru_cache(maxsize=8)
def _projection(dim: int) -> torch.Tensor:
    """(dim, FEATURE_DIM) matrix with orthonormal columns (QR of a seeded Gaussian)."""
    g = torch.Generator(device="cpu").manual_seed(PROJECTION_SEED + dim)
    q, _ = torch.linalg.qr(torch.randn(dim, FEATURE_DIM, generator=g, dtype=torch.float64))
    return q.float()


def compact_feature(query: torch.Tensor) -> torch.Tensor:
    """(B, dim) final query tokens -> (B, FEATURE_DIM) fp32 features (pad or project)."""
    q = query.float()
    dim = q.shape[-1]
    if dim == FEATURE_DIM:
        return q
    if dim < FEATURE_DIM:
        return torch.nn.functional.pad(q, (0, FEATURE_DIM - dim))
    return q @ _projection(dim).to(q.device)
