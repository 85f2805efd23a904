"""ECLM: error-constrained layer merging of the ViT backbone.

Consecutive transformer blocks ``i .. i+m`` are merged into one block with the
"reserve differences" rule of LaCo (Yang et al. 2024, "LaCo: Large Language Model Pruning via
Layer Collapse"): ``theta = theta_i + sum_k (theta_{i+k} - theta_i)`` for every parameter.
Candidates are ranked by how little the group changes the representation (linear CKA between
the group's input and output tokens on calibration crops, Kornblith et al. 2019); the search
walks from the last blocks towards the first and **accepts a merge only if the calibration
MPJPE stays within ``eps`` mm of the unmerged model's** (the budget is cumulative: every
accepted merge is measured with all earlier ones in place).

The result is an :class:`ECLMPlan` (groups of original block indices).  :func:`apply_eclm`
swaps a merged ``ModuleList`` into the backbone and returns a handle whose ``remove()`` puts
the original blocks back (bit-identical outputs).  Checkpoints are read and written by
:mod:`hmrflow.stages.mesh.checkpoint`: ``save_estimator(..., plan=...)`` stores the merged
weights with the plan and the architecture in the header, so ``load_estimator`` rebuilds the
merged model without any calibration.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from hmrflow.pipeline.errors import ConfigError
from hmrflow.priors.metrics import mpjpe, pa_mpjpe
from hmrflow.stages.mesh.backbone import ViTBackbone
from hmrflow.stages.mesh.model import MeshEstimator

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class ECLMPlan:
    """Which original blocks are merged.

    base_depth: depth of the unmerged backbone.
    groups: non-overlapping ``(first, last)`` inclusive ranges of original block indices, each
        merged into one block (blocks in no group stay as they are).
    """

    base_depth: int
    groups: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        groups = tuple(sorted((int(a), int(b)) for a, b in self.groups))
        object.__setattr__(self, "groups", groups)
        prev = -1
        for a, b in groups:
            if not (0 <= a < b < self.base_depth) or a <= prev:
                raise ValueError(f"bad ECLM groups {groups} for depth {self.base_depth}")
            prev = b

    @property
    def depth(self) -> int:
        """Blocks after merging."""
        return self.base_depth - sum(b - a for a, b in self.groups)

    def block_groups(self) -> list[list[int]]:
        """Original block indices of each merged block, in order (covers every block once)."""
        starts = {a: b for a, b in self.groups}
        out, i = [], 0
        while i < self.base_depth:
            j = starts.get(i, i)
            out.append(list(range(i, j + 1)))
            i = j + 1
        return out

    def with_group(self, first: int, last: int) -> "ECLMPlan":
        return ECLMPlan(self.base_depth, self.groups + ((first, last),))

    def to_json(self) -> str:
        return json.dumps({"base_depth": self.base_depth, "groups": [list(g) for g in self.groups]})

    @classmethod
    def from_json(cls, text: str) -> "ECLMPlan":
        d = json.loads(text)
        return cls(int(d["base_depth"]), tuple(tuple(g) for g in d["groups"]))


def merge_blocks(blocks: Sequence[nn.Module]) -> nn.Module:
    """One block with ``theta_0 + sum_k (theta_k - theta_0)`` for every parameter and buffer
    (a copy; the inputs are not modified).  A single block is returned as a copy."""
    merged = copy.deepcopy(blocks[0])
    if len(blocks) == 1:
        return merged
    with torch.no_grad():
        states = [dict(b.state_dict()) for b in blocks]
        out = {}
        for name, base in states[0].items():
            if not torch.is_floating_point(base):
                out[name] = base.clone()
                continue
            acc = base.double().clone()
            for st in states[1:]:
                acc += st[name].double() - base.double()
            out[name] = acc.to(base.dtype)
        merged.load_state_dict(out)
    return merged


@dataclass
class ECLMHandle:
    """Returned by :func:`apply_eclm`; ``remove()`` restores the original blocks."""

    backbone: ViTBackbone
    plan: ECLMPlan
    original: nn.ModuleList
    _active: bool = field(default=True, repr=False)

    def remove(self) -> None:
        if self._active:
            self.backbone.blocks = self.original
            self._active = False

    def __enter__(self) -> "ECLMHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _backbone(model: nn.Module) -> ViTBackbone:
    bb = model.backbone if hasattr(model, "backbone") else model
    if not isinstance(bb, ViTBackbone):
        raise TypeError(f"expected a MeshEstimator or ViTBackbone, got {type(model).__name__}")
    return bb


def apply_eclm(model: nn.Module, plan: ECLMPlan) -> ECLMHandle:
    """Replace the backbone's blocks by the merged ones of ``plan`` (new modules; the
    original blocks are kept untouched in the handle)."""
    bb = _backbone(model)
    if len(bb.blocks) != plan.base_depth:
        raise ValueError(f"plan is for depth {plan.base_depth}, backbone has {len(bb.blocks)} blocks")
    original = bb.blocks
    bb.blocks = nn.ModuleList(merge_blocks([original[i] for i in g]) for g in plan.block_groups())
    return ECLMHandle(bb, plan, original)


def merged_parameters(blocks: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The LaCo-merged parameters of ``blocks`` as a differentiable function of theirs:
    ``{name: theta_0 + sum_k (theta_k - theta_0)}`` (the same values :func:`merge_blocks`
    stores, but gradients flow back into every merged block; used by merge-aware training)."""
    named = [dict(b.named_parameters()) for b in blocks]
    out = {}
    for name, base in named[0].items():
        acc = base
        for other in named[1:]:
            acc = acc + (other[name] - base)
        out[name] = acc
    return out


def forward_features_merged(backbone: ViTBackbone, crops: torch.Tensor, plan: ECLMPlan) -> torch.Tensor:
    """Backbone forward as if ``plan`` were applied, without building new modules:
    crops (B, 3, H, W) -> last-normed tokens (B, N, C).  Equal to the output of
    :func:`apply_eclm` (tested), and differentiable with respect to the original blocks, so a
    training step can teach the unmerged model to survive the merge."""
    from torch.func import functional_call

    if len(backbone.blocks) != plan.base_depth:
        raise ValueError(f"plan is for depth {plan.base_depth}, backbone has {len(backbone.blocks)} blocks")
    x = backbone.embed(crops)
    for group in plan.block_groups():
        first = backbone.blocks[group[0]]
        if len(group) == 1:
            x = first(x)
        else:
            x = functional_call(first, merged_parameters([backbone.blocks[i] for i in group]), (x,))
    return backbone.last_norm(x)


def _walk_plan(
    depth: int, spans: Sequence[int], keep_first: int, pick: Callable[[list[int]], Optional[int]]
) -> ECLMPlan:
    """Walk from the last block to the first (as :func:`search_plan` does); at each block,
    ``pick`` chooses the span of a group ending there among those that fit after
    ``keep_first`` (None: no group here, move one block down)."""
    groups: list[tuple[int, int]] = []
    last = depth - 1
    while last >= keep_first + 1:
        fits = [int(s) for s in spans if last - int(s) + 1 >= keep_first]
        span = pick(fits) if fits else None
        if span is None:
            last -= 1
            continue
        groups.append((last - span + 1, last))
        last -= span
    return ECLMPlan(depth, tuple(groups))


def sample_plan(
    depth: int, gen: torch.Generator, spans: Sequence[int] = (2, 3), keep_first: int = 1, p_merge: float = 0.6
) -> ECLMPlan:
    """A random plan of the family :func:`search_plan` explores: a group of a random span in
    ``spans`` ends at each block with probability ``p_merge``."""

    def pick(fits: list[int]) -> Optional[int]:
        if float(torch.rand((), generator=gen)) >= p_merge:
            return None
        return fits[int(torch.randint(len(fits), (), generator=gen))]

    return _walk_plan(depth, spans, keep_first, pick)


def deepest_plan(depth: int, spans: Sequence[int] = (2, 3), keep_first: int = 1) -> ECLMPlan:
    """The plan of the :func:`sample_plan` family that removes the most blocks: always the
    largest span that fits (depth 6, spans 2-3: groups 1..2 and 3..5)."""
    return _walk_plan(depth, spans, keep_first, max)


# ----------------------------------------------------------------------------- similarity
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same M examples: x (M, C1), y (M, C2).

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc; 1 for
    representations equal up to rotation and isotropic scaling, near 0 for unrelated ones.
    """
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den.clamp_min(1e-30))


@torch.inference_mode()
def block_representations(backbone: ViTBackbone, crops: torch.Tensor, batch_size: int = 32) -> list[torch.Tensor]:
    """Tokens before block 0 and after every block: list of depth+1 tensors (B*N, C) fp32."""
    reps: list[list[torch.Tensor]] = [[] for _ in range(len(backbone.blocks) + 1)]
    for s in range(0, crops.shape[0], batch_size):
        x = backbone.embed(crops[s : s + batch_size])
        reps[0].append(x.float().flatten(0, 1))
        for i, blk in enumerate(backbone.blocks):
            x = blk(x)
            reps[i + 1].append(x.float().flatten(0, 1))
    return [torch.cat(r) for r in reps]


# ----------------------------------------------------------------------------- errors
@dataclass
class CalibrationSet:
    """Crops with 3D ground truth.

    images: (N, 3, H, W) float32 ImageNet-normalised crops.
    joints3d: (N, 24, 3) float32 GT joints (camera frame, metres; only shape matters: the
        errors are pelvis-aligned or Procrustes-aligned).
    token_masks: optional (N, gh, gw) person coverage per token cell (for Mask-ToMe).
    """

    images: torch.Tensor
    joints3d: torch.Tensor
    token_masks: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.joints3d.shape != (n, 24, 3):
            raise ValueError(f"joints3d must be ({n}, 24, 3), got {tuple(self.joints3d.shape)}")
        if self.token_masks is not None and self.token_masks.shape[0] != n:
            raise ValueError(f"token_masks has {self.token_masks.shape[0]} rows for {n} crops")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, idx: slice | torch.Tensor) -> "CalibrationSet":
        tm = None if self.token_masks is None else self.token_masks[idx]
        return CalibrationSet(self.images[idx], self.joints3d[idx], tm)


@torch.inference_mode()
def predict_joints(
    model: nn.Module,
    body_model: nn.Module,
    images: torch.Tensor,
    token_masks: Optional[torch.Tensor] = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Estimator -> body model joints (N, 24, 3) fp32 on the CPU.

    ``token_masks`` are passed as ``protect=`` (only when given: a model with Mask-ToMe applied
    accepts it).  ``autocast_dtype`` (e.g. bf16) runs the estimator under autocast.
    """
    device = torch.device(device)
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s : s + batch_size].to(device)
        kw = {} if token_masks is None else {"protect": token_masks[s : s + batch_size].to(device)}
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            pred = model(x, **kw)
        joints = body_model(pred.rotmats.float(), pred.betas.float()).joints
        out.append(joints.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 24, 3)


def calibration_errors(
    model: nn.Module, body_model: nn.Module, calib: CalibrationSet, use_masks: bool = False, **kw: Any
) -> dict[str, float]:
    """Mean MPJPE and PA-MPJPE (mm) of ``model`` on ``calib``."""
    joints = predict_joints(model, body_model, calib.images, calib.token_masks if use_masks else None, **kw)
    return {
        "mpjpe_mm": float(mpjpe(joints, calib.joints3d).mean()),
        "pa_mpjpe_mm": float(pa_mpjpe(joints, calib.joints3d).mean()),
    }


# ----------------------------------------------------------------------------- search
@dataclass(frozen=True)
class ECLMConfig:
    """Error-constrained layer merging.

    eps_mm: largest allowed increase of the calibration error over the unmerged model (mm; a
        negative budget demands an improvement, so usually nothing is merged).
    error_metric: ``mpjpe_mm`` (pelvis-aligned, default) or ``pa_mpjpe_mm``.
    spans: group sizes tried at each position (2 = merge a pair of blocks into one).
    min_cka: candidates whose input/output CKA is below this are rejected unevaluated.
    keep_first: never merge the first ``keep_first`` blocks (they map pixels to features).
    max_merges: stop after this many accepted merges (None = no limit).
    batch_size: crops per forward during calibration.
    order: how the candidates ending at one block are tried: ``cka`` (highest CKA first: the
        merge that changes the representation least) or ``span`` (longest group first, CKA
        breaking ties: the most depth removed that the budget allows).
    """

    eps_mm: float = 1.0
    error_metric: str = "mpjpe_mm"
    spans: tuple[int, ...] = (2,)
    min_cka: float = 0.0
    keep_first: int = 1
    max_merges: Optional[int] = None
    batch_size: int = 32
    order: str = "cka"

    def __post_init__(self) -> None:
        if math.isnan(self.eps_mm):
            raise ConfigError("eclm eps_mm must be a number of millimetres, got NaN")
        if self.error_metric not in ("mpjpe_mm", "pa_mpjpe_mm"):
            raise ConfigError(f"eclm error_metric must be mpjpe_mm or pa_mpjpe_mm, got {self.error_metric!r}")
        if not self.spans or any(int(s) < 2 for s in self.spans):
            raise ConfigError(f"eclm spans must be integers >= 2, got {self.spans}")
        if self.order not in ("cka", "span"):
            raise ConfigError(f"eclm order must be cka or span, got {self.order!r}")


@dataclass
class ECLMStep:
    """One evaluated candidate of the search."""

    group: tuple[int, int]
    cka: float
    errors: dict[str, float]
    increase_mm: float
    accepted: bool
    depth: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": list(self.group),
            "cka": self.cka,
            **self.errors,
            "increase_mm": self.increase_mm,
            "accepted": self.accepted,
            "depth_if_accepted": self.depth,
        }


@dataclass
class ECLMResult:
    plan: ECLMPlan
    baseline: dict[str, float]
    final: dict[str, float]
    steps: list[ECLMStep]

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": json.loads(self.plan.to_json()),
            "base_depth": self.plan.base_depth,
            "final_depth": self.plan.depth,
            "baseline": self.baseline,
            "final": self.final,
            "steps": [s.as_dict() for s in self.steps],
        }


def search_plan(
    model: MeshEstimator,
    body_model: nn.Module,
    calib: CalibrationSet,
    cfg: ECLMConfig,
    device: torch.device | str = "cpu",
    progress: Optional[Callable[[ECLMStep], None]] = None,
) -> ECLMResult:
    """Walk from the last blocks to the first; at each position try the candidate groups
    ending there (ranked by CKA, highest first, or longest first with ``cfg.order="span"``) and accept the first whose calibration error
    stays within ``cfg.eps_mm`` of the unmerged model.  The model is left unchanged."""
    bb = _backbone(model)
    depth = len(bb.blocks)
    model.eval()
    ekw = dict(batch_size=cfg.batch_size, device=device)
    baseline = calibration_errors(model, body_model, calib, **ekw)
    log.info("ECLM baseline on %d crops: %s", len(calib), baseline)
    reps = block_representations(bb, calib.images[: min(len(calib), 64)].to(device), cfg.batch_size)
    plan = ECLMPlan(depth)
    final = dict(baseline)
    steps: list[ECLMStep] = []
    last = depth - 1
    while last >= cfg.keep_first + 1:
        if cfg.max_merges is not None and len(plan.groups) >= cfg.max_merges:
            break
        cands = []
        for span in cfg.spans:
            first = last - int(span) + 1
            if first >= cfg.keep_first:
                cands.append((linear_cka(reps[first], reps[last + 1]), first))
        if cfg.order == "span":
            cands.sort(key=lambda c: (-(last - c[1]), -c[0]))
        else:
            cands.sort(reverse=True)
        accepted = False
        for cka, first in cands:
            if cka < cfg.min_cka:
                continue
            trial = plan.with_group(first, last)
            with apply_eclm(model, trial):
                errs = calibration_errors(model, body_model, calib, **ekw)
            inc = errs[cfg.error_metric] - baseline[cfg.error_metric]
            ok = inc <= cfg.eps_mm
            step = ECLMStep((first, last), cka, errs, inc, ok, trial.depth)
            steps.append(step)
            log.info(
                "ECLM merge blocks %d..%d (CKA %.3f): %s %+.2f mm -> %s",
                first,
                last,
                cka,
                cfg.error_metric,
                inc,
                "accepted" if ok else "rejected",
            )
            if progress:
                progress(step)
            if ok:
                plan, final, accepted = trial, errs, True
                last = first - 1
                break
        if not accepted:
            last -= 1
    return ECLMResult(plan=plan, baseline=baseline, final=final, steps=steps)
