"""A few optimiser steps that fit SMPL parameters to a predicted mesh (FastMETRO head's option).

The FastMETRO head's SMPL readout is a one-shot regression from the coarse mesh; the mesh itself
is usually closer to the truth than the parameters read from it.  ``estimate.mesh_fit_steps``
runs Adam on the 6D pose and the betas, starting from the readout, to bring the body model's
vertices (each mesh minus its own pelvis joint) onto the predicted full mesh.  Plain L2 on the
vertices: the mesh has no outliers that would call for a robust loss, and the pelvis-aligned
objective leaves the translation to the camera as before.
"""

from __future__ import annotations

import torch

from hmrflow.priors.rotations import rot6d_to_matrix


def fit_to_vertices(
    body_model: torch.nn.Module,
    vertices: torch.Tensor,
    pose6d: torch.Tensor,
    betas: torch.Tensor,
    steps: int = 10,
    lr: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine (pose6d, betas) so the body model's mesh matches ``vertices``.

    vertices: (B, V, 3) target mesh (any translation: both meshes are compared pelvis-aligned,
    the target's pelvis taken with the body model's joint regressor); pose6d: (B, 24, 6) and
    betas: (B, 10) the starting point.  Returns (rotmats (B, 24, 3, 3), betas (B, 10), pose6d
    (B, 24, 6)), fp32, detached.
    """
    target = vertices.detach().float()
    j_reg = body_model.layer.J_regressor.to(target)
    target = target - torch.einsum("v,bvc->bc", j_reg[0], target)[:, None]
    p = pose6d.detach().float().clone().requires_grad_(True)
    b = betas.detach().float().clone().requires_grad_(True)
    if steps > 0:
        opt = torch.optim.Adam([p, b], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                out = body_model(rot6d_to_matrix(p), b)
                loss = ((out.vertices - out.joints[:, :1]) - target).pow(2).sum(-1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    p = p.detach()
    return rot6d_to_matrix(p), b.detach(), p
