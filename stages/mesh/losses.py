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
        return EstimatorTargets(*(t.to(device, non_blocking=True) for t in (self.rotmats, self.betas, self.joints3d, self.joints2d)))


def weak_perspective(joints: torch.Tensor, pred_cam: torch.Tensor) -> torch.Tensor:
    """Body points (B, K, 3) and weak-perspective (s, tx, ty) (B, 3) -> crop-normalised (B, K, 2)."""
    s = pred_cam[:, None, 0:1]
    return s * (joints[..., :2] + pred_cam[:, None, 1:]) / 2


def pelvis_aligned(joints: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) -> joints minus joint 0."""
    return joints - joints[:, :1]


def procrustes_aligned(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Similarity-align ``pred`` (B, K, 3) to ``gt`` (B, K, 3) (scale, rotation, translation); returns aligned pred."""
    pred = pred.double()
    gt = gt.double()
    mp, mg = pred.mean(1, keepdim=True), gt.mean(1, keepdim=True)
    p, g = pred - mp, gt - mg
    cov = p.transpose(1, 2) @ g  # (B, 3, 3)
    u, sv, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    e = torch.ones_like(sv)
    e[:, 2] = d
    rot = vt.transpose(1, 2) @ torch.diag_embed(e) @ u.transpose(1, 2)  # maps p -> g
    scale = (sv * e).sum(-1) / p.pow(2).sum((1, 2)).clamp_min(1e-12)
    return (scale[:, None, None] * p @ rot.transpose(1, 2) + mg).float()


def joint_errors(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MPJPE (pelvis-aligned) and PA-MPJPE in the input unit: (B,), (B,)."""
    mpjpe = (pelvis_aligned(pred) - pelvis_aligned(gt)).norm(dim=-1).mean(-1)
    pa = (procrustes_aligned(pred, gt) - gt.float()).norm(dim=-1).mean(-1)
    return mpjpe, pa


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
        per_joint = (pelvis_aligned(joints) - pelvis_aligned(gt3d))
        l3d = per_joint.abs().sum(-1).mean()
        j2d = weak_perspective(joints, out.pred_cam.float())
        l2d = (j2d - targets.joints2d.float()).abs().sum(-1).mean()
        lrot = (rot - targets.rotmats.float()).pow(2).sum((-1, -2)).mean()
        lbeta = (betas - targets.betas.float()).pow(2).mean()
        mpjpe = per_joint.detach().norm(dim=-1).mean(-1)
        conf_target = torch.exp(-mpjpe / weights.conf_scale)
        lconf = F.binary_cross_entropy(out.confidence.float().clamp(1e-6, 1 - 1e-6), conf_target)
        total = (weights.joints3d * l3d + weights.joints2d * l2d + weights.rotmats * lrot
                 + weights.betas * lbeta + weights.confidence * lconf)
    return {"total": total, "joints3d": l3d, "joints2d": l2d, "rotmats": lrot, "betas": lbeta,
            "confidence": lconf, "mpjpe": mpjpe}
