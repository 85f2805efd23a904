"""Bodies and boxes in the synthetic world: ground placement, frame changes, meshes.

Frame change of SMPL parameters (docs/FORMATS.md): for ``x' = R x + t`` the body model
rotates about its rest root joint ``J0(betas)``, so ``root' = R root`` and
``transl' = R (J0 + transl) + t - J0``.
"""

from __future__ import annotations

import numpy as np
import torch

from hmrflow.priors.rotations import axis_angle_to_matrix, matrix_to_axis_angle


def change_frame(
    root_aa: torch.Tensor, transl: torch.Tensor, j0: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL root orientation and translation under ``x' = R x + t``.

    Args:
        root_aa: (..., 3) axis-angle root orientation; transl: (..., 3).
        j0: (..., 3) rest root joint for the person's betas.
        R: (..., 3, 3), t: (..., 3) the frame change (broadcast against the others).
    Returns:
        ``(root_aa', transl')`` with the input shapes.
    """
    root = matrix_to_axis_angle(R @ axis_angle_to_matrix(root_aa))
    new_t = (R @ (j0 + transl)[..., None])[..., 0] + t - j0
    return root, new_t


def ground_offset_y(model, poses0: torch.Tensor, betas: torch.Tensor, transl0: torch.Tensor) -> torch.Tensor:
    """(P,) vertical shift that puts each body's lowest vertex on y = 0 at the given frame.

    Args:
        model: body model; poses0: (P, 24, 3) axis-angle; betas: (P, 10); transl0: (P, 3).
    """
    with torch.no_grad():
        out = model(axis_angle_to_matrix(poses0), betas, transl0)
    return -out.vertices[..., 1].amin(dim=1)


def box_mesh(
    centre_xz: tuple[float, float], size: tuple[float, float, float], yaw: float
) -> tuple[np.ndarray, np.ndarray]:
    """A box standing on the ground: (8, 3) world vertices and (12, 3) outward CCW faces."""
    w, h, d = size
    x = np.array([-w / 2, w / 2])
    z = np.array([-d / 2, d / 2])
    v = np.array([[xi, yi, zi] for xi in x for yi in (0.0, h) for zi in z])  # index = 4*ix + 2*iy + iz
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    v = v @ rot.T + np.array([centre_xz[0], 0.0, centre_xz[1]])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, cc, dd in quads:
        faces += [(a, b, cc), (a, cc, dd)]
    faces = np.array(faces, dtype=np.int64)
    # make every face point away from the box centre
    centre = v.mean(0)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = ((tri.mean(1) - centre) * n).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    return v, faces


def mesh_is_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True when a closed-ish mesh's CCW face normals point outward (positive signed volume)."""
    tri = np.asarray(vertices, np.float64)[faces]
    vol = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return bool(vol > 0)
