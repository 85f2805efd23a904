"""The mesh estimator: ViT backbone + SMPL transformer-decoder head, built by size name.

``build_estimator("huge")`` is HMR2.0's ViT-H/16 + decoder exactly (see ``backbone`` and
``head`` for the facts and sources); smaller sizes keep the same structure with narrower and
shallower parts.  Crops are made outside the model (:mod:`hmrflow.stages.mesh.crop`) and the
weak-perspective camera is converted outside too (:mod:`hmrflow.stages.mesh.camera`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Optional, Union

import torch
from torch import nn

from hmrflow.priors.rotations import rot6d_to_matrix
from hmrflow.stages.mesh.backbone import ViTBackbone, ViTConfig
from hmrflow.stages.mesh.fastmetro import FastMETROConfig, FastMETROHead, fastmetro_config, topology_from_body_model
from hmrflow.stages.mesh.features import compact_feature
from hmrflow.stages.mesh.head import HeadConfig, HeadOutput, SMPLHead

if TYPE_CHECKING:
    from hmrflow.priors.body_model import BodyModel

#: Head kinds: HMR2.0's one-query SMPL decoder, or FastMETRO's mesh encoder-decoder.
HeadKind = Literal["smpl", "fastmetro"]

#: Crop size (H, W) HMR2.0 feeds its ViT.
DEFAULT_IMAGE_SIZE: tuple[int, int] = (256, 192)


@dataclass(frozen=True)
class EstimatorSpec:
    """A named estimator size: backbone and head shapes (``head`` is the SMPL head's config or
    a :class:`~hmrflow.stages.mesh.fastmetro.FastMETROConfig`)."""

    name: str
    backbone: ViTConfig
    head: Union[HeadConfig, FastMETROConfig]

    @property
    def head_kind(self) -> HeadKind:
        """``smpl`` or ``fastmetro``."""
        return "fastmetro" if isinstance(self.head, FastMETROConfig) else "smpl"


def _spec(name: str, dim: int, depth: int, heads: int, head: dict[str, int], mlp_ratio: float = 4.0) -> EstimatorSpec:
    return EstimatorSpec(
        name=name,
        backbone=ViTConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio),
        head=HeadConfig(context_dim=dim, **head),
    )


_HMR2_HEAD = dict(dim=1024, depth=6, heads=8, dim_head=64, mlp_dim=1024)

#: Sizes by name (a plain dict, no registry).  ``huge`` is HMR2.0's published architecture.
SIZES: dict[str, EstimatorSpec] = {
    # CI / demo: trains on 2 CPU cores; 2.42 M parameters (9.7 MB fp32).  MLP ratio 2 (not 4)
    # keeps six layers (room for layer merging) under the 10 MB budget of a bundled model.
    "tiny": _spec("tiny", 192, 6, 3, dict(dim=128, depth=2, heads=4, dim_head=32, mlp_dim=256), mlp_ratio=2.0),
    "small": _spec("small", 384, 12, 6, dict(dim=512, depth=4, heads=8, dim_head=64, mlp_dim=1024)),
    "base": _spec("base", 768, 12, 12, _HMR2_HEAD),
    "large": _spec("large", 1024, 24, 16, _HMR2_HEAD),
    "huge": _spec("huge", 1280, 32, 16, _HMR2_HEAD),
}


def estimator_spec(size: str | EstimatorSpec, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> EstimatorSpec:
    """The spec of a named size (or a given spec) for crops of ``image_size`` (H, W)."""
    if isinstance(size, EstimatorSpec):
        spec = size
    else:
        if size not in SIZES:
            raise ValueError(f"unknown estimator size {size!r}; choose one of {', '.join(SIZES)}")
        spec = SIZES[size]
    image_size = (int(image_size[0]), int(image_size[1]))
    if spec.backbone.image_size != image_size:
        spec = replace(spec, backbone=replace(spec.backbone, image_size=image_size))
    return spec


@dataclass
class EstimatorOutput:
    """What the estimator predicts for B crops.

    rotmats: (B, 24, 3, 3) fp32, joint 0 = global orientation in the crop camera (OpenCV axes).
    betas: (B, 10) fp32.
    pred_cam: (B, 3) fp32 weak-perspective (s, tx, ty) in the crop (see ``camera``).
    confidence: (B,) fp32 in (0, 1).
    pose6d: (B, 24, 6) fp32, the 6D values behind ``rotmats`` (for losses).
    feature: (B, FEATURE_DIM) fp32 compact image feature for refinement
        (:func:`~hmrflow.stages.mesh.features.compact_feature` of the head's final query), or
        None where not computed.
    vertices, joints, coarse, mesh_joints: the FastMETRO head's own mesh outputs (see
        :class:`~hmrflow.stages.mesh.head.HeadOutput`), None for the SMPL head.
    """

    rotmats: torch.Tensor
    betas: torch.Tensor
    pred_cam: torch.Tensor
    confidence: torch.Tensor
    pose6d: torch.Tensor
    feature: Optional[torch.Tensor] = None
    vertices: Optional[torch.Tensor] = None
    joints: Optional[torch.Tensor] = None
    coarse: Optional[torch.Tensor] = None
    mesh_joints: Optional[torch.Tensor] = None

    @classmethod
    def cat(cls, parts: "list[EstimatorOutput]", order: Optional[torch.Tensor] = None) -> "EstimatorOutput":
        """The rows of ``parts`` one after the other (then taken in ``order`` when given); a
        field None in the first part is None in the result."""
        out = {}
        for f in dataclasses.fields(cls):
            if getattr(parts[0], f.name) is None:
                out[f.name] = None
                continue
            t = torch.cat([getattr(p, f.name) for p in parts])
            out[f.name] = t if order is None else t[order]
        return cls(**out)


class MeshEstimator(nn.Module):
    """ViT backbone + SMPL or FastMETRO head: normalised crops (B, 3, H, W) -> :class:`EstimatorOutput`."""

    def __init__(self, spec: EstimatorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ViTBackbone(spec.backbone)
        self.head: Union[SMPLHead, FastMETROHead] = (
            FastMETROHead(spec.head) if isinstance(spec.head, FastMETROConfig) else SMPLHead(spec.head)
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the crops this model takes."""
        return self.spec.backbone.image_size

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of the backbone's token grid (16 x 12 for 256 x 192 crops)."""
        return self.spec.backbone.token_grid

    def forward_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> image tokens (B, N, C)."""
        return self.backbone.forward_features(crops)

    def forward_head(self, tokens: torch.Tensor, context_bias: Optional[torch.Tensor] = None) -> EstimatorOutput:
        """Image tokens (B, N, C) (possibly merged; ``context_bias`` (B, 1, 1, N) then carries
        ``log(size)``) -> :class:`EstimatorOutput`.  Rotations are computed in fp32."""
        out: HeadOutput = self.head(tokens, context_bias)
        with torch.autocast(device_type=out.pose6d.device.type, enabled=False):
            pose6d = out.pose6d.float()
            rotmats = rot6d_to_matrix(pose6d)
            conf = torch.sigmoid(out.confidence_logit.float())
            feature = compact_feature(out.query.detach())
        return EstimatorOutput(
            rotmats=rotmats,
            betas=out.betas.float(),
            pred_cam=out.cam.float(),
            confidence=conf,
            pose6d=pose6d,
            feature=feature,
            vertices=out.vertices,
            joints=out.joints,
            coarse=out.coarse,
            mesh_joints=out.mesh_joints,
        )

    def forward(self, crops: torch.Tensor) -> EstimatorOutput:
        """crops: (B, 3, H, W) float, ImageNet-normalised (see ``crop.make_crops``)."""
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise ValueError(f"crops must be (B, 3, H, W), got {tuple(crops.shape)}")
        return self.forward_head(self.forward_features(crops))


def build_estimator(
    size: str | EstimatorSpec = "tiny",
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    head: HeadKind = "smpl",
    body_model: "Optional[BodyModel]" = None,
    attention_mask: bool = True,
) -> MeshEstimator:
    """A freshly initialised estimator of a named size (``tiny`` ... ``huge``) for crops (H, W).

    head: ``smpl`` or ``fastmetro``; the FastMETRO head takes its mesh topology from
    ``body_model`` (default: the synthetic body); ``attention_mask=False`` builds the ablation
    without the decoder's mesh-adjacency mask.
    """
    spec = estimator_spec(size, image_size)
    if head == "fastmetro" and not isinstance(spec.head, FastMETROConfig):
        from hmrflow.priors.body_model import load_body_model

        body_model = body_model if body_model is not None else load_body_model("synthetic")
        cfg = fastmetro_config(spec.name, spec.backbone.embed_dim, body_model, attention_mask)
        spec = replace(spec, head=cfg)
    elif head not in ("smpl", "fastmetro"):
        raise ValueError(f"unknown head {head!r}; choose smpl or fastmetro")
    model = MeshEstimator(spec)
    if isinstance(model.head, FastMETROHead):
        from hmrflow.priors.body_model import load_body_model

        topology_from_body_model(model.head, body_model if body_model is not None else load_body_model("synthetic"))
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
