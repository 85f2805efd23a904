"""Training losses and joint-error metrics of the mesh estimator (pure torch, fp32).

Losses (HMR2.0's recipe without the adversarial prior, plus a confidence target):

* ``joints3d``: L1 between predicted and ground-truth 3D joints (24 SMPL joints from the body
  model), both pelvis-aligned, metres.
* ``joints2d``: L1 between the predicted joints projected with the predicted weak-perspective
  camera, ``s (X_xy + t_xy) / 2``, and the ground-truth joints in crop-normalised coordinates
  (``(u - crop centre) / crop size``).
* ``rotmats`` / ``betas``: mean squared error of all 24 rotation matrices (global orientation
  included) and of the 10 shape coefficients.
* ``confidence``: binary cross-entropy of the confidence against ``exp(-MPJPE / scale)`` of the
  same prediction (a detached target): confident means "my joints are close".

All inputs are cast to fp32 and autocast is off inside (SMPL is never run in half precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hmrflow.priors.metrics import align_pelvis
from hmrflow.stages.mesh.model import EstimatorOutput


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (see module docstring); ``conf_scale`` in metres."""

    joints3d: float = 5.0
    joints2d: float = 5.0
    rotmats: float = 1.0
    betas: float = 0.05
    confidence: float = 0.1
    conf_scale: float = 0.1
    #: mesh heads (FastMETRO): L1 of the full mesh's vertices, of the joint tokens' and the
    #: mesh's joints (3D, pelvis-aligned) and of their weak-perspective projections (2D)
    vertices: float = 5.0
    mesh_joints3d: float = 5.0
    mesh_joints2d: float = 5.0


@dataclass
class EstimatorTargets:
    """Ground truth for B crops.

    rotmats: (B, 24, 3, 3) camera-frame joint rotations; betas: (B, 10);
    joints3d: (B, 24, 3) camera-frame joints (any translation: they are pelvis-aligned here);
    joints2d: (B, 24, 2) crop-normalised projected joints.
    """

    rotmats: torch.Tensor
    betas: torch.Tensor
    joints3d: torch.Tensor
    joints2d: torch.Tensor

    def to(self, device: torch.device | str) -> "EstimatorTargets":
        return EstimatorTargets(
            *(t.to(device, non_blocking=True) for t in (self.rotmats, self.betas, self.joints3d, self.joints2d))
        )


def weak_perspective(joints: torch.Tensor, pred_cam: torch.Tensor) -> torch.Tensor:
    """Body points (B, K, 3) and weak-perspective (s, tx, ty) (B, 3) -> crop-normalised (B, K, 2)."""
    s = pred_cam[:, None, 0:1]
    return s * (joints[..., :2] + pred_cam[:, None, 1:]) / 2


def estimator_losses(
    out: EstimatorOutput,
    targets: EstimatorTargets,
    body_model: torch.nn.Module,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """Loss terms (scalars) and their weighted sum ``total``; ``mpjpe`` (B,) metres for logging."""
    dev = out.rotmats.device
    with torch.autocast(device_type=dev.type, enabled=False):
        rot, betas = out.rotmats.float(), out.betas.float()
        joints = body_model(rot, betas).joints  # (B, 24, 3), transl 0
        gt3d = targets.joints3d.float()
        per_joint = align_pelvis(joints) - align_pelvis(gt3d)
        l3d = per_joint.abs().sum(-1).mean()
        j2d = weak_perspective(joints, out.pred_cam.float())
        l2d = (j2d - targets.joints2d.float()).abs().sum(-1).mean()
        lrot = (rot - targets.rotmats.float()).pow(2).sum((-1, -2)).mean()
        lbeta = (betas - targets.betas.float()).pow(2).mean()
        mpjpe = per_joint.detach().norm(dim=-1).mean(-1)
        conf_target = torch.exp(-mpjpe / weights.conf_scale)
        lconf = F.binary_cross_entropy(out.confidence.float().clamp(1e-6, 1 - 1e-6), conf_target)
        total = (
            weights.joints3d * l3d
            + weights.joints2d * l2d
            + weights.rotmats * lrot
            + weights.betas * lbeta
            + weights.confidence * lconf
        )
        terms: dict[str, torch.Tensor] = {}
        if out.vertices is not None and out.joints is not None and out.mesh_joints is not None:
            terms = mesh_losses(out, targets, body_model)
            total = (
                total
                + weights.vertices * terms["vertices"]
                + weights.mesh_joints3d * terms["mesh_joints3d"]
                + weights.mesh_joints2d * terms["mesh_joints2d"]
            )
    return {
        **terms,
        "total": total,
        "joints3d": l3d,
        "joints2d": l2d,
        "rotmats": lrot,
        "betas": lbeta,
        "confidence": lconf,
        "mpjpe": mpjpe,
    }


def mesh_losses(
    out: EstimatorOutput, targets: EstimatorTargets, body_model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """FastMETRO's losses on a mesh head's own outputs (fp32): ``vertices`` (full-mesh L1, each
    mesh minus its own pelvis joint), ``mesh_joints3d`` (L1 of the joint tokens' and the mesh's
    joints, pelvis-aligned, summed over the two sets), ``mesh_joints2d`` (L1 of both sets'
    weak-perspective projections with the predicted camera); ``pve`` (B,) metres for logging.

    The ground-truth mesh is the body model posed with the target rotations and shape (the
    frame the joint targets are in, at zero translation)."""
    assert out.vertices is not None and out.joints is not None and out.mesh_joints is not None
    with torch.autocast(device_type=out.vertices.device.type, enabled=False):
        with torch.no_grad():
            gt = body_model(targets.rotmats.float(), targets.betas.float())
        gt_v = gt.vertices - gt.joints[:, :1]
        verts = out.vertices.float() - out.mesh_joints[:, :1].float()
        per_v = verts - gt_v
        lv = per_v.abs().sum(-1).mean()
        gt3d = align_pelvis(targets.joints3d.float())
        cam = out.pred_cam.float()
        l3d = out.vertices.new_zeros(())
        l2d = out.vertices.new_zeros(())
        for j in (out.joints.float(), out.mesh_joints.float()):
            l3d = l3d + (align_pelvis(j) - gt3d).abs().sum(-1).mean()
            l2d = l2d + (weak_perspective(j, cam) - targets.joints2d.float()).abs().sum(-1).mean()
    return {"vertices": lv, "mesh_joints3d": l3d, "mesh_joints2d": l2d, "pve": per_v.detach().norm(dim=-1).mean(-1)}
