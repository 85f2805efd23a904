"""Rotation conversions in pure torch (fp32 in, fp32 out; batched over leading dims).

Shapes: axis-angle ``(..., 3)``, matrices ``(..., 3, 3)``, 6D ``(..., 6)`` = the first two
columns of the matrix (Zhou et al. 2019), as HMR2.0 uses.
"""

from __future__ import annotations

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix (Rodrigues, stable near 0)."""
    angle = aa.norm(dim=-1, keepdim=True)  # (..., 1)
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    axis = aa / safe
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(aa.shape[:-1] + (3, 3))
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    rot = eye + s * k + (1 - c) * (k @ k)
    # first-order expansion for tiny angles: I + [aa]_x
    ax, ay, az = aa.unbind(-1)
    k0 = torch.stack([zero, -az, ay, az, zero, -ax, -ay, ax, zero], dim=-1).reshape(k.shape)
    return torch.where(small[..., None], eye + k0, rot)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle with angle in [0, pi].

    Goes through a unit quaternion, which is stable for angles near 0 and near pi.
    """
    q = matrix_to_quaternion(rot)  # (..., 4) w, x, y, z with w >= 0
    w = q[..., :1].clamp(-1.0, 1.0)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, w)
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp_min(1e-12), 2.0 * torch.ones_like(angle))
    return xyz * scale


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z), w >= 0."""
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    q_abs = torch.sqrt(
        torch.clamp(
            torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1),
            min=0.0,
        )
    )
    # candidate quaternions, each well conditioned when its own component is large
    cands = torch.stack(
        [
            torch.stack(
                [
                    q_abs[..., 0] ** 2,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    q_abs[..., 1] ** 2,
                    m[..., 1, 0] + m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] + m[..., 0, 1],
                    q_abs[..., 2] ** 2,
                    m[..., 2, 1] + m[..., 1, 2],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 2, 0] + m[..., 0, 2],
                    m[..., 2, 1] + m[..., 1, 2],
                    q_abs[..., 3] ** 2,
                ],
                -1,
            ),
        ],
        dim=-2,
    )
    cands = cands / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_rot6d(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): first two columns, column-major [r00, r10, r20, r01, r11, r21]."""
    return rot[..., :, :2].transpose(-1, -2).reshape(rot.shape[:-2] + (6,))


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotation_z_to(rays: torch.Tensor) -> torch.Tensor:
    """(..., 3) directions -> (..., 3, 3) minimal rotations taking (0, 0, 1) onto each (no roll
    about it; Rodrigues' formula).  Used for viewing rays: a crop shows a person along the ray
    through it, not along the optical axis."""
    ray = rays / rays.norm(dim=-1, keepdim=True)
    z = torch.zeros_like(ray)
    z[..., 2] = 1.0
    axis = torch.cross(z, ray, dim=-1)  # |axis| = sin(angle)
    sin = axis.norm(dim=-1)
    cos = ray[..., 2]
    k = axis / sin.clamp_min(1e-12)[..., None]
    zero = torch.zeros_like(sin)
    K = torch.stack([zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0], -k[..., 1], k[..., 0], zero], -1)
    K = K.reshape(ray.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=ray.dtype, device=ray.device).expand_as(K)
    return eye + sin[..., None, None] * K + (1 - cos)[..., None, None] * (K @ K)


def nearest_rotation(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) matrices -> the nearest rotations in the Frobenius norm (SVD, det +1)."""
    u, _, vh = torch.linalg.svd(m)
    d = torch.sign(torch.det(u @ vh))
    fix = torch.ones(m.shape[:-2] + (3,), dtype=m.dtype, device=m.device)
    fix[..., 2] = d
    return u @ torch.diag_embed(fix) @ vh
