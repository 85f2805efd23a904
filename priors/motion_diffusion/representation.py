"""SMPL motion <-> feature vectors for the motion prior (pure torch, fp32).

One frame of body motion is ``N_FEAT = 24 * 6 + 3 = 147`` numbers: the 6D rotation
(:func:`hmrflow.priors.rotations.matrix_to_rot6d`) of the root orientation and of the 23
local joint rotations, then the root position.

Camera frame and canonicalisation
---------------------------------
Estimates live in the camera frame (OpenCV, y down), whose orientation with respect to
gravity and to the person is arbitrary.  Instead of learning every camera placement, each
window is *canonicalised*: a reference rotation ``R_ref`` (the weighted chordal mean of the
window's observed root orientations) and centre ``c`` (the weighted mean root position)
are taken from the window's own per-frame estimates, and the window is expressed in that
frame::

    root'_t = R_ref^T root_t          p'_t = R_ref^T (p_t - c),   p_t = transl_t + J0

``decanonicalise`` undoes this exactly.  Training uses the same procedure (reference taken
from the *noisy* conditioning, the clean target expressed in that frame), so the model never
needs to know the camera placement.  The camera's viewing ray to the root (``R_ref^T p/|p|``)
and the log distance are given to the model as conditioning, because estimate noise (depth
drift) is aligned with that ray.

``J0`` is the root joint of the rest pose; a fixed template value :data:`ROOT_JOINT` is used
(SMPL rotates about ``J0(betas)``; the exact value only changes which point is called the
root position, and the same value is used forwards and backwards, so the map is exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hmrflow.priors.rotations import matrix_to_rot6d, rot6d_to_matrix

N_JOINTS = 24
N_ROT_FEAT = N_JOINTS * 6
#: features per frame: 24 x 6D rotations + root position (3)
N_FEAT = N_ROT_FEAT + 3
#: conditioning per frame: features of the estimate (147), observed mask, confidence, ray (3), log distance
N_COND = N_FEAT + 1 + 1 + 3 + 1
#: approximate rest-pose root joint J0 of the SMPL template (metres, body frame)
ROOT_JOINT = (0.0, -0.22, 0.03)


@dataclass(frozen=True)
class Canonical:
    """The per-window frame used by :func:`canonicalise`.

    rot: (B, 3, 3) reference rotation ``R_ref`` (camera <- canonical).
    centre: (B, 3) reference root position ``c`` (camera frame, metres).
    """

    rot: torch.Tensor
    centre: torch.Tensor


def root_positions(transl: torch.Tensor) -> torch.Tensor:
    """(..., 3) SMPL ``transl`` -> (..., 3) root joint position ``transl + J0``."""
    return transl + transl.new_tensor(ROOT_JOINT)


def project_to_so3(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) any matrix -> nearest rotation (SVD, det +1)."""
    u, _, vh = torch.linalg.svd(m)
    d = torch.det(u @ vh)
    s = torch.ones_like(u[..., 0])
    s[..., 2] = d
    return u @ torch.diag_embed(s) @ vh


def reference_frame(root_rot: torch.Tensor, transl: torch.Tensor, weights: torch.Tensor) -> Canonical:
    """Reference frame of each window from its estimates.

    root_rot: (B, T, 3, 3) root orientations; transl: (B, T, 3); weights: (B, T) >= 0
    (observed mask, optionally times confidence).  Windows with zero weight get the
    identity / zero centre.
    """
    w = weights.to(root_rot.dtype)
    wsum = w.sum(1)  # (B,)
    safe = torch.where(wsum > 0, wsum, torch.ones_like(wsum))
    mean_rot = (w[..., None, None] * root_rot).sum(1) / safe[:, None, None]
    eye = torch.eye(3, dtype=root_rot.dtype, device=root_rot.device).expand_as(mean_rot)
    mean_rot = torch.where((wsum > 0)[:, None, None], mean_rot, eye)
    rot = project_to_so3(mean_rot)
    centre = (w[..., None] * root_positions(transl)).sum(1) / safe[:, None]
    return Canonical(rot=rot, centre=centre)


def canonicalise(rotmats: torch.Tensor, transl: torch.Tensor, frame: Canonical) -> torch.Tensor:
    """Motion in the camera frame -> features in the window's canonical frame.

    rotmats: (B, T, 24, 3, 3); transl: (B, T, 3).  Returns (B, T, N_FEAT) (not normalised).
    """
    rt = frame.rot.transpose(-1, -2)[:, None]  # (B, 1, 3, 3)
    root = rt @ rotmats[:, :, 0]
    rots = torch.cat([root[:, :, None], rotmats[:, :, 1:]], dim=2)
    pos = (rt @ (root_positions(transl) - frame.centre[:, None])[..., None])[..., 0]
    return torch.cat([matrix_to_rot6d(rots).flatten(2), pos], dim=-1)


def decanonicalise(feats: torch.Tensor, frame: Canonical) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`canonicalise`: (B, T, N_FEAT) -> rotmats (B, T, 24, 3, 3), transl (B, T, 3)."""
    b, t = feats.shape[:2]
    rots = rot6d_to_matrix(feats[..., :N_ROT_FEAT].reshape(b, t, N_JOINTS, 6))
    r = frame.rot[:, None]
    root = r @ rots[:, :, 0]
    rots = torch.cat([root[:, :, None], rots[:, :, 1:]], dim=2)
    p = (r @ feats[..., N_ROT_FEAT:, None])[..., 0] + frame.centre[:, None]
    transl = p - p.new_tensor(ROOT_JOINT)
    return rots, transl


def conditioning(
    rotmats: torch.Tensor,
    transl: torch.Tensor,
    observed: torch.Tensor,
    confidence: torch.Tensor,
    frame: Canonical,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """Conditioning features of per-frame estimates, (B, T, N_COND).

    rotmats (B, T, 24, 3, 3), transl (B, T, 3) camera frame (values at unobserved frames are
    ignored); observed (B, T) bool; confidence (B, T) in [0, 1]; mean/std (N_FEAT,) the
    feature normalisation.  Layout: normalised estimate features (zero where unobserved),
    observed, confidence, viewing ray to the root in the canonical frame (3), log distance.
    """
    obs = observed.to(rotmats.dtype)[..., None]
    feats = (canonicalise(rotmats, transl, frame) - mean) / std * obs
    p = root_positions(transl)
    dist = p.norm(dim=-1, keepdim=True).clamp_min(1e-3)
    ray = (frame.rot.transpose(-1, -2)[:, None] @ (p / dist)[..., None])[..., 0] * obs
    logd = torch.log(dist) * obs
    conf = confidence.to(rotmats.dtype)[..., None] * obs
    return torch.cat([feats, obs, conf, ray, logd], dim=-1)
