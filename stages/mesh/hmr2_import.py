"""Import the published HMR2.0 checkpoint layout into :class:`MeshEstimator`, with strict accounting.

Layout facts (derived from the module tree in shubham-goel/4D-Humans @ 6ec7965:
``hmr2/models/hmr2.py`` (``HMR2``: ``backbone``, ``smpl_head``, ``discriminator``,
``keypoint_3d_loss``, ``keypoint_2d_loss``, ``smpl_parameter_loss``, ``smpl``, buffer
``initialized``), ``hmr2/models/backbones/vit.py``, ``hmr2/models/heads/smpl_head.py``,
``hmr2/models/components/pose_transformer.py``, ``hmr2/models/discriminator.py``,
``hmr2/models/smpl_wrapper.py`` + smplx's ``SMPLLayer`` buffers).  The Lightning checkpoint
(``epoch=35-step=1000000.ckpt``) keeps these under ``state_dict``.  For ViT-H
(C = 1280, N = 16 x 12 = 192 tokens, decoder D = 1024, inner I = 8 x 64 = 512, MLP M = 1024):

====================================================================  =================
key                                                                   shape
====================================================================  =================
backbone.patch_embed.proj.weight / .bias                              (C, 3, 16, 16) / (C,)
backbone.pos_embed                                                    (1, N + 1, C)
backbone.blocks.{0..31}.norm1.weight / .bias                          (C,)
backbone.blocks.{i}.attn.qkv.weight / .bias                           (3C, C) / (3C,)
backbone.blocks.{i}.attn.proj.weight / .bias                          (C, C) / (C,)
backbone.blocks.{i}.norm2.weight / .bias                              (C,)
backbone.blocks.{i}.mlp.fc1.weight / .bias                            (4C, C) / (4C,)
backbone.blocks.{i}.mlp.fc2.weight / .bias                            (C, 4C) / (C,)
backbone.last_norm.weight / .bias                                     (C,)
smpl_head.init_body_pose / init_betas / init_cam                      (1, 144) / (1, 10) / (1, 3)
smpl_head.transformer.to_token_embedding.weight / .bias               (D, 1) / (D,)
smpl_head.transformer.pos_embedding                                   (1, 1, D)
smpl_head.transformer.transformer.layers.{0..5}.0.norm.weight/.bias   (D,)   self-attention
  ... .0.fn.to_qkv.weight                                             (3I, D)
  ... .0.fn.to_out.0.weight / .bias                                   (D, I) / (D,)
  ... .1.norm.*, .1.fn.to_q.weight, .1.fn.to_kv.weight                (D,), (I, D), (2I, C)  cross
  ... .1.fn.to_out.0.weight / .bias                                   (D, I) / (D,)
  ... .2.norm.*, .2.fn.net.0.weight/.bias, .2.fn.net.3.weight/.bias   (D,), (M, D)/(M,), (D, M)/(D,)
smpl_head.decpose / decshape / deccam .weight                         (144, D) / (10, D) / (3, D)
====================================================================  =================

Keys we do not use (training or body-model only): ``discriminator.*`` (the adversarial pose/
shape prior), ``smpl.*`` (SMPL body-model buffers incl. ``joint_regressor_extra`` (19, 6890)
and ``joint_map`` (25,); hmrflow loads its body model separately), ``initialized`` (a
Lightning flag), and anything under the loss modules (they hold no weights).  The shapes of
those extras below are read from the source, not from the binary checkpoint.

hmrflow's ``head.confidence`` readout has no HMR2 counterpart: the import zeroes it
(confidence 0.5 for every crop until fine-tuned) and reports it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from hmrflow.pipeline.errors import CheckpointError
from hmrflow.stages.mesh.model import DEFAULT_IMAGE_SIZE, EstimatorSpec, MeshEstimator, estimator_spec

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
_Convert = Callable[[torch.Tensor], torch.Tensor]

#: Key prefixes of the published checkpoint that hmrflow does not use, and why.
IGNORED_PREFIXES: dict[str, str] = {
    "discriminator.": "adversarial SMPL-parameter discriminator: a training-only loss network",
    "smpl.": "SMPL body-model buffers: hmrflow loads its body model separately (priors.body_model)",
    "keypoint_3d_loss.": "loss module: training-only",
    "keypoint_2d_loss.": "loss module: training-only",
    "smpl_parameter_loss.": "loss module: training-only",
    "renderer.": "visualisation: not part of the estimator",
    "mesh_renderer.": "visualisation: not part of the estimator",
    "initialized": "Lightning ActNorm-initialisation flag: training-only",
}

#: Our parameters with no counterpart in HMR2.0, and what the import does with them.
HMRFLOW_ONLY: dict[str, str] = {
    "head.confidence.weight": "hmrflow confidence readout (not in HMR2.0): zeroed, confidence = 0.5",
    "head.confidence.bias": "hmrflow confidence readout (not in HMR2.0): zeroed, confidence = 0.5",
}

_N_DISC_JOINTS = 23
_SMPL_VERTS = 6890


@dataclass(frozen=True)
class _Entry:
    """One checkpoint key: its published shape, our key and the conversion to our shape."""

    shape: Shape
    ours: str
    convert: _Convert


@dataclass
class ImportReport:
    """What an import did, key by key.

    used: checkpoint key -> our key it was copied into.
    ignored: checkpoint key -> why it was not used.
    hmrflow_only: our key -> what was done with it (no HMR2 counterpart).
    missing: our keys the checkpoint did not cover (besides ``hmrflow_only``); empty after a
        successful import of the same size.
    """

    used: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    hmrflow_only: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"HMR2 import: {len(self.used)} tensors used, {len(self.ignored)} ignored "
            f"({', '.join(sorted({_group(k) for k in self.ignored})) or 'none'}), "
            f"{len(self.hmrflow_only)} hmrflow-only, {len(self.missing)} not covered"
        )


def _group(key: str) -> str:
    for prefix in IGNORED_PREFIXES:
        if key.startswith(prefix):
            return prefix.rstrip(".")
    return key.split(".")[0]


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1)


def _fold_pos_embed(x: torch.Tensor) -> torch.Tensor:
    """(1, N + 1, C) with a class-token slot -> (1, N, C): HMR2 adds slot 0 to every token."""
    return x[:, 1:] + x[:, :1]


def _model_entries(spec: EstimatorSpec) -> dict[str, _Entry]:
    """The published keys that map onto our model, for an estimator of ``spec``."""
    b, h = spec.backbone, spec.head
    c, p, n, hid = b.embed_dim, b.patch_size, b.num_tokens, b.mlp_hidden
    d, inner, m, ctx = h.dim, h.inner_dim, h.mlp_dim, h.context_dim
    e: dict[str, _Entry] = {}

    def add(key: str, shape: Shape, ours: str, convert: _Convert = _same) -> None:
        e[key] = _Entry(tuple(shape), ours, convert)

    add("backbone.patch_embed.proj.weight", (c, 3, p, p), "backbone.patch_embed.proj.weight")
    add("backbone.patch_embed.proj.bias", (c,), "backbone.patch_embed.proj.bias")
    add("backbone.pos_embed", (1, n + 1, c), "backbone.pos_embed", _fold_pos_embed)
    for i in range(b.depth):
        k = f"backbone.blocks.{i}."
        for name, shape in (
            ("norm1.weight", (c,)),
            ("norm1.bias", (c,)),
            ("attn.qkv.weight", (3 * c, c)),
            ("attn.proj.weight", (c, c)),
            ("attn.proj.bias", (c,)),
            ("norm2.weight", (c,)),
            ("norm2.bias", (c,)),
            ("mlp.fc1.weight", (hid, c)),
            ("mlp.fc1.bias", (hid,)),
            ("mlp.fc2.weight", (c, hid)),
            ("mlp.fc2.bias", (c,)),
        ):
            add(k + name, shape, k + name)
        if b.qkv_bias:
            add(k + "attn.qkv.bias", (3 * c,), k + "attn.qkv.bias")
    add("backbone.last_norm.weight", (c,), "backbone.last_norm.weight")
    add("backbone.last_norm.bias", (c,), "backbone.last_norm.bias")

    add("smpl_head.init_body_pose", (1, 24 * 6), "head.init_pose", _flat)
    add("smpl_head.init_betas", (1, 10), "head.init_betas", _flat)
    add("smpl_head.init_cam", (1, 3), "head.init_cam", _flat)
    t = "smpl_head.transformer."
    add(t + "to_token_embedding.weight", (d, 1), "head.token_embed.weight")
    add(t + "to_token_embedding.bias", (d,), "head.token_embed.bias")
    add(t + "pos_embedding", (1, 1, d), "head.query_pos")
    for i in range(h.depth):
        k, o = f"{t}transformer.layers.{i}.", f"head.layers.{i}."
        for j, norm in enumerate(("norm1", "norm2", "norm3")):
            add(f"{k}{j}.norm.weight", (d,), f"{o}{norm}.weight")
            add(f"{k}{j}.norm.bias", (d,), f"{o}{norm}.bias")
        add(k + "0.fn.to_qkv.weight", (3 * inner, d), o + "self_attn.to_qkv.weight")
        add(k + "0.fn.to_out.0.weight", (d, inner), o + "self_attn.to_out.weight")
        add(k + "0.fn.to_out.0.bias", (d,), o + "self_attn.to_out.bias")
        add(k + "1.fn.to_q.weight", (inner, d), o + "cross_attn.to_q.weight")
        add(k + "1.fn.to_kv.weight", (2 * inner, ctx), o + "cross_attn.to_kv.weight")
        add(k + "1.fn.to_out.0.weight", (d, inner), o + "cross_attn.to_out.weight")
        add(k + "1.fn.to_out.0.bias", (d,), o + "cross_attn.to_out.bias")
        add(k + "2.fn.net.0.weight", (m, d), o + "ff.fc1.weight")
        add(k + "2.fn.net.0.bias", (m,), o + "ff.fc1.bias")
        add(k + "2.fn.net.3.weight", (d, m), o + "ff.fc2.weight")
        add(k + "2.fn.net.3.bias", (d,), o + "ff.fc2.bias")
    for name, rows in (("decpose", 24 * 6), ("decshape", 10), ("deccam", 3)):
        add(f"smpl_head.{name}.weight", (rows, d), f"head.{name}.weight")
        add(f"smpl_head.{name}.bias", (rows,), f"head.{name}.bias")
    return e


def _training_layout() -> dict[str, Shape]:
    """Keys of the published checkpoint outside the estimator (see module docstring)."""
    out: dict[str, Shape] = {
        "discriminator.D_conv1.weight": (32, 9, 1, 1),
        "discriminator.D_conv1.bias": (32,),
        "discriminator.D_conv2.weight": (32, 32, 1, 1),
        "discriminator.D_conv2.bias": (32,),
        "discriminator.betas_fc1.weight": (10, 10),
        "discriminator.betas_fc1.bias": (10,),
        "discriminator.betas_fc2.weight": (5, 10),
        "discriminator.betas_fc2.bias": (5,),
        "discriminator.betas_out.weight": (1, 5),
        "discriminator.betas_out.bias": (1,),
        "discriminator.D_alljoints_fc1.weight": (1024, 32 * _N_DISC_JOINTS),
        "discriminator.D_alljoints_fc1.bias": (1024,),
        "discriminator.D_alljoints_fc2.weight": (1024, 1024),
        "discriminator.D_alljoints_fc2.bias": (1024,),
        "discriminator.D_alljoints_out.weight": (1, 1024),
        "discriminator.D_alljoints_out.bias": (1,),
    }
    for j in range(_N_DISC_JOINTS):
        out[f"discriminator.pose_out.{j}.weight"] = (1, 32)
        out[f"discriminator.pose_out.{j}.bias"] = (1,)
    v = _SMPL_VERTS
    out.update(
        {
            "smpl.shapedirs": (v, 3, 10),
            "smpl.faces_tensor": (13776, 3),
            "smpl.v_template": (v, 3),
            "smpl.J_regressor": (24, v),
            "smpl.posedirs": (207, v * 3),
            "smpl.parents": (24,),
            "smpl.lbs_weights": (v, 24),
            "smpl.vertex_joint_selector.extra_joints_idxs": (21,),
            "smpl.joint_regressor_extra": (19, v),
            "smpl.joint_map": (25,),
            "initialized": (),
        }
    )
    return out


def hmr2_key_layout(
    size: str | EstimatorSpec = "huge",
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    include_training_keys: bool = True,
) -> dict[str, Shape]:
    """Keys and shapes of an HMR2.0 checkpoint for an estimator of ``size`` (``huge`` = published).

    Smaller sizes give the same layout with their own widths/depths (for tests and for
    converting HMR2-style checkpoints of other widths).  ``include_training_keys`` adds the
    discriminator / SMPL buffers / flag keys that the import ignores.
    """
    spec = estimator_spec(size, image_size)
    layout = {k: e.shape for k, e in _model_entries(spec).items()}
    if include_training_keys:
        layout.update(_training_layout())
    return layout


def _ignore_reason(key: str) -> str | None:
    for prefix, reason in IGNORED_PREFIXES.items():
        if key == prefix or key.startswith(prefix):
            return reason
    return None


def import_hmr2_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: MeshEstimator, strict: bool = True
) -> ImportReport:
    """Copy an HMR2.0-layout state dict into ``model`` (in place) and account for every key.

    state_dict: the checkpoint's ``state_dict`` (a Lightning ``{"state_dict": ...}`` is unwrapped).
    strict: unknown keys (neither mapped nor known-ignorable) raise; with False they are
        reported as ignored.
    Raises :class:`CheckpointError` naming the key for a missing key, a shape mismatch or
    (strict) an unknown key.  Nothing is modified unless every check passes.
    """
    if isinstance(state_dict.get("state_dict"), Mapping):  # type: ignore[union-attr]
        state_dict = state_dict["state_dict"]  # type: ignore[assignment]
    entries = _model_entries(model.spec)
    ours = model.state_dict()
    report = ImportReport()

    absent = [k for k in entries if k not in state_dict]
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise CheckpointError(
            f"HMR2 checkpoint lacks {len(absent)} key(s) needed by the {model.spec.name!r} estimator: "
            f"{', '.join(absent[:5])}{more} (is it an HMR2.0 checkpoint of this size?)"
        )
    unknown: list[str] = []
    for key in state_dict:
        if key in entries:
            continue
        reason = _ignore_reason(key)
        if reason is None:
            unknown.append(key)
        else:
            report.ignored[key] = reason
    if unknown and strict:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise CheckpointError(
            f"HMR2 checkpoint has {len(unknown)} key(s) unknown to the {model.spec.name!r} estimator: "
            f"{', '.join(unknown[:5])}{more} (deeper/other model? pass strict=False to ignore)"
        )
    for key in unknown:
        report.ignored[key] = "unknown key (ignored because strict=False)"

    converted: dict[str, torch.Tensor] = {}
    for key, entry in entries.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"HMR2 checkpoint key {key!r}: expected a tensor, got {type(value).__name__}")
        if tuple(value.shape) != entry.shape:
            raise CheckpointError(
                f"HMR2 checkpoint key {key!r} has shape {tuple(value.shape)}, the {model.spec.name!r} "
                f"estimator expects {entry.shape}"
            )
        new = entry.convert(value)
        if entry.ours not in ours or tuple(new.shape) != tuple(ours[entry.ours].shape):
            raise CheckpointError(
                f"HMR2 key {key!r} -> {entry.ours!r}: converted shape {tuple(new.shape)} does not match "
                f"the model's {tuple(ours[entry.ours].shape) if entry.ours in ours else 'missing parameter'}"
            )
        converted[entry.ours] = new
        report.used[key] = entry.ours

    with torch.no_grad():
        for name, value in converted.items():
            ours[name].copy_(value.to(dtype=ours[name].dtype, device=ours[name].device))
        for name, what in HMRFLOW_ONLY.items():
            if name in ours:
                ours[name].zero_()
                report.hmrflow_only[name] = what
    report.missing = sorted(set(ours) - set(converted) - set(report.hmrflow_only))
    log.info(report.summary())
    return report


def load_hmr2_checkpoint(path: str | os.PathLike[str], model: MeshEstimator, strict: bool = True) -> ImportReport:
    """Read an HMR2.0 weights file safely (no pickled code runs) and import it into ``model``.

    A ``.ckpt`` whose ``hyper_parameters`` hold a yacs config is refused by the weights-only
    loader; extract its ``state_dict`` to ``.safetensors`` (or ``.pt``) first.
    """
    from hmrflow.pipeline.checkpoints import load_state_dict

    state = load_state_dict(path)
    try:
        return import_hmr2_state_dict(state, model, strict=strict)
    except CheckpointError as exc:
        raise CheckpointError(f"{os.fspath(path)}: {exc}") from None
