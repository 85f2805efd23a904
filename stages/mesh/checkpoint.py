"""Estimator checkpoints: the one reader and writer of mesh-estimator weights files.

Three kinds of file load through :func:`load_estimator`:

* **hmrflow weights** written by :func:`save_estimator` (safetensors): the header names the
  architecture (``estimator_spec``, plus ``size`` and ``image_size`` for older readers);
* **layer-merged (ECLM) weights**, also written by :func:`save_estimator` with a ``plan``: the
  header adds the merge plan, and the merged structure is rebuilt before the weights load
  (no calibration involved);
* **HMR2.0 weights** (4D-Humans' key layout, e.g. a ``.pt`` state dict): imported with strict
  accounting of every key by :mod:`hmrflow.stages.mesh.hmr2_import`.

A headerless file of ours is understood from its tensor shapes.  Every failure is a
:class:`~hmrflow.pipeline.errors.CheckpointError` naming the file.  Files are read with
:mod:`hmrflow.pipeline.checkpoints` (safetensors, or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from hmrflow.pipeline.checkpoints import load_state_dict, read_header, save_state_dict
from hmrflow.pipeline.errors import CheckpointError
from hmrflow.stages.mesh.backbone import ViTConfig
from hmrflow.stages.mesh.fastmetro import FastMETROConfig
from hmrflow.stages.mesh.head import HeadConfig
from hmrflow.stages.mesh.model import DEFAULT_IMAGE_SIZE, SIZES, EstimatorSpec, MeshEstimator, estimator_spec

if TYPE_CHECKING:
    from hmrflow.stages.mesh.accel.eclm import ECLMPlan

log = logging.getLogger(__name__)

#: What our weights files say in their safetensors header (``format``).
WEIGHTS_FORMAT = "hmrflow.mesh_estimator.v1"


def bundled_weights_path(size: str, eclm: bool = False, head: str = "smpl") -> Path:
    """Where the package keeps the trained weights of ``size`` (the file may not exist):
    ``weights/estimator_<size>[_eclm].safetensors`` for the SMPL head,
    ``weights/<head>/estimator_<size>_<head>[_eclm].safetensors`` for another head (each folder
    with its own train_config.json and validation.json); ``eclm=True``: the layer-merged variant."""
    folder = resources.files("hmrflow.stages.mesh") / "weights"
    if head != "smpl":
        folder = folder / head
    name = f"estimator_{size}" + ("" if head == "smpl" else f"_{head}") + ("_eclm" if eclm else "")
    return Path(str(folder / f"{name}.safetensors"))


def is_merged_checkpoint(header: dict[str, str]) -> bool:
    """True for the header of a layer-merged (ECLM) checkpoint."""
    return "eclm_plan" in header


def is_hmr2_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for a state dict in HMR2.0's published key layout (``backbone.blocks`` + ``smpl_head``)."""
    return any(k.startswith("smpl_head.") for k in state) and any(k.startswith("backbone.blocks.") for k in state)


def spec_to_dict(spec: EstimatorSpec) -> dict[str, Any]:
    """JSON-able architecture of an estimator (what the header stores)."""
    return {"name": spec.name, "backbone": asdict(spec.backbone), "head": asdict(spec.head)}


def spec_from_dict(d: dict[str, Any]) -> EstimatorSpec:
    """Inverse of :func:`spec_to_dict`."""
    bb = dict(d["backbone"])
    bb["image_size"] = tuple(bb["image_size"])
    hd = dict(d["head"])
    head: HeadConfig | FastMETROConfig
    if hd.pop("kind", "smpl") == "fastmetro":
        hd["dims"] = tuple(hd["dims"])
        head = FastMETROConfig(**hd)
    else:
        head = HeadConfig(**hd)
    return EstimatorSpec(name=str(d.get("name", "custom")), backbone=ViTConfig(**bb), head=head)


def save_estimator(
    model: MeshEstimator,
    path: str | Path,
    extra: Optional[dict[str, Any]] = None,
    dtype: Optional[torch.dtype] = None,
    plan: "Optional[ECLMPlan]" = None,
    report: Optional[dict[str, Any]] = None,
) -> Path:
    """Write the estimator's weights (safetensors) with its architecture in the header.

    extra: more header entries (JSON-encoded).
    dtype: ``torch.float16`` halves the file; loading casts back to the model's fp32 parameters.
    plan: the ECLM plan of an already layer-merged ``model`` (its blocks must match the plan's
        depth); the file is then a merged checkpoint.  report: the ECLM search summary stored
        beside the plan.
    """
    meta = {
        "format": WEIGHTS_FORMAT,
        "size": model.spec.name,
        "image_size": json.dumps(list(model.image_size)),
        "estimator_spec": json.dumps(spec_to_dict(model.spec)),
    }
    if plan is not None:
        depth = len(model.backbone.blocks)
        if depth != plan.depth:
            raise ValueError(f"model has {depth} blocks but the plan gives depth {plan.depth}")
        meta["eclm_plan"] = plan.to_json()
        if report is not None:
            meta["eclm_report"] = json.dumps(report)
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = model.state_dict()
    if dtype is not None:
        meta["dtype"] = str(dtype).replace("torch.", "")
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return save_state_dict(state, path, metadata=meta)


def _header_size(header: dict[str, str]) -> Optional[str]:
    raw = header.get("size")
    if raw is None:
        return None
    return json.loads(raw) if raw.startswith('"') else raw


def _infer_spec(
    state: dict[str, torch.Tensor],
    header: dict[str, str],
    path: Path,
    size: Optional[str],
    image_size: Optional[tuple[int, int]],
) -> EstimatorSpec:
    """Architecture of a plain checkpoint: the header's spec, else its size and crop size, else
    the tensor shapes (embedding width -> size, position embeddings -> crop size, blocks -> depth)."""
    if "estimator_spec" in header:
        try:
            spec = spec_from_dict(json.loads(header["estimator_spec"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: unreadable 'estimator_spec' header entry ({exc})") from None
        # the caller's crop size wins (a file of another size then fails on its position embedding)
        return spec if image_size is None else estimator_spec(spec, image_size)
    size = size or _header_size(header)
    if image_size is None and "image_size" in header:
        image_size = tuple(int(v) for v in json.loads(header["image_size"]))  # type: ignore[assignment]
    pos = state.get("backbone.pos_embed")
    if pos is None:
        raise CheckpointError(f"{path}: not a mesh estimator checkpoint (no backbone.pos_embed)")
    dim, n_tok = int(pos.shape[-1]), int(pos.shape[-2])
    if size is None:
        matches = [k for k, s in SIZES.items() if s.backbone.embed_dim == dim]
        if not matches:
            raise CheckpointError(f"{path}: embed dim {dim} matches no estimator size ({', '.join(SIZES)})")
        size = matches[0]
    if image_size is None:
        gh = round(math.sqrt(n_tok * 4 / 3))
        gw = n_tok // max(gh, 1)
        if gh * gw != n_tok:
            raise CheckpointError(f"{path}: cannot infer the crop size from {n_tok} tokens; pass the image size")
        image_size = (gh * 16, gw * 16)
    try:
        spec = estimator_spec(size, image_size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    depth = len({k.split(".")[2] for k in state if k.startswith("backbone.blocks.")})
    if depth and depth != spec.backbone.depth:
        spec = replace(spec, backbone=replace(spec.backbone, depth=depth))
    return spec


def _load_exact(model: MeshEstimator, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model`` accounting for every key and shape (CheckpointError otherwise)."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(ours[k].shape)}"
        for k in ours
        if k in state and state[k].shape != ours[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"shape mismatch: {'; '.join(wrong[:3])}")
        raise CheckpointError(
            f"{path}: does not fit the {model.spec.name!r} estimator at crop size {model.image_size}: "
            + ", ".join(parts)
            + " (check estimate.size / estimate.image_size)"
        )
    model.load_state_dict(state)


def load_estimator(
    path: str | Path,
    size: Optional[str] = None,
    image_size: Optional[tuple[int, int]] = None,
    device: torch.device | str = "cpu",
) -> "tuple[MeshEstimator, Optional[ECLMPlan]]":
    """Load any estimator checkpoint (see module docstring) into an eval-mode model on ``device``.

    size / image_size: what the caller expects (``estimate.size`` / ``estimate.image_size``);
        None takes them from the file.  A file of another size or, for a merged file, another
        crop size is a CheckpointError.
    Returns (model, the ECLM plan of a merged checkpoint or None).
    """
    from hmrflow.stages.mesh.accel.eclm import ECLMPlan, apply_eclm

    p = Path(path)
    state = load_state_dict(p)
    header = read_header(p)
    stored = _header_size(header)
    if size is not None and stored is not None and stored != size:
        raise CheckpointError(f"{p}: weights of the {stored!r} estimator, but estimate.size is {size!r}")
    plan = None
    if is_merged_checkpoint(header):
        try:
            spec = spec_from_dict(json.loads(header["estimator_spec"]))
            plan = ECLMPlan.from_json(header["eclm_plan"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{p}: merged-estimator header is incomplete ({exc})") from None
        if size is not None and spec.name != size:
            raise CheckpointError(f"{p}: weights of the {spec.name!r} estimator, but estimate.size is {size!r}")
        if image_size is not None and tuple(image_size) != spec.backbone.image_size:
            raise CheckpointError(
                f"{p}: merged checkpoint for crops {spec.backbone.image_size}, but "
                f"estimate.image_size is {tuple(image_size)}"
            )
        model = MeshEstimator(spec)
        apply_eclm(model, plan)  # structure only; the merged weights are loaded next
        _load_exact(model, state, p)
    elif is_hmr2_layout(state):
        from hmrflow.stages.mesh.hmr2_import import import_hmr2_state_dict

        model = MeshEstimator(estimator_spec(size or "huge", image_size or DEFAULT_IMAGE_SIZE))
        try:
            import_hmr2_state_dict(state, model)
        except CheckpointError as exc:
            raise CheckpointError(f"{p}: {exc}") from None
    else:
        model = MeshEstimator(_infer_spec(state, header, p, size, image_size))
        _load_exact(model, state, p)
    return model.to(device).eval(), plan
