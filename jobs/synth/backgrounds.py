"""Procedural, geometrically consistent backgrounds: a textured ground plane (y = 0) inside a
textured cylindrical wall around the origin, and a sky gradient above it.

Every pixel's viewing ray is intersected with the ground and the wall, so a moving camera
sees the background move correctly (parallax of the ground, panning over the wall).
Textures are small seamless tiles (checkers, stripes, bricks, multi-octave value noise)
repeated by bilinear lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TILE = 128
TILE_KINDS = ("checker", "stripes", "bricks", "noise", "gradient")


def _color(rng: np.random.Generator, v_lo: float = 0.15, v_hi: float = 0.95) -> torch.Tensor:
    import colorsys

    return torch.tensor(
        colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.8), rng.uniform(v_lo, v_hi)), dtype=torch.float32
    )


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> torch.Tensor:
    """(size, size) seamless noise in [0, 1]: sum of bilinearly upsampled periodic random grids."""
    out = torch.zeros(size, size)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = 2 ** (o + 2)
        grid = torch.from_numpy(rng.random((g, g), dtype=np.float32))
        grid = torch.cat([grid, grid[:1]], 0)
        grid = torch.cat([grid, grid[:, :1]], 1)  # periodic: last row/col = first
        up = F.interpolate(grid[None, None], size=(size + 1, size + 1), mode="bilinear", align_corners=True)[0, 0]
        out += amp * up[:size, :size]
        total += amp
        amp *= 0.5
    return out / total


def make_tile(rng: np.random.Generator, kind: str, size: int = TILE) -> torch.Tensor:
    """A seamless (3, size, size) float32 texture tile in [0, 1] of the given kind."""
    c1, c2 = _color(rng), _color(rng)
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32) / size, torch.arange(size, dtype=torch.float32) / size, indexing="ij"
    )
    if kind == "checker":
        n = int(rng.integers(1, 5)) * 2
        m = ((torch.floor(xx * n) + torch.floor(yy * n)) % 2).float()
    elif kind == "stripes":
        ku, kv = int(rng.integers(0, 6)), int(rng.integers(1, 6))
        m = (torch.sin(2 * np.pi * (ku * xx + kv * yy)) > rng.uniform(-0.5, 0.5)).float()
    elif kind == "bricks":
        rows = int(rng.integers(2, 7))
        row = torch.floor(yy * rows)
        shift = (row % 2) * 0.5 / 2
        cols = rows // 2 + 1
        fx = (xx * cols + shift * 2) % 1.0
        fy = (yy * rows) % 1.0
        m = ((fx < 0.06) | (fy < 0.1)).float()
    elif kind == "noise":
        m = _value_noise(rng, size)
        m = (m - m.min()) / (m.max() - m.min() + 1e-6)
    elif kind == "gradient":
        m = yy * 0.7 + 0.3 * _value_noise(rng, size, 3)
    else:
        raise ValueError(f"unknown tile kind {kind!r}")
    tile = c1[:, None, None] * (1 - m) + c2[:, None, None] * m
    grit = _value_noise(rng, size, 5)
    tile = tile * (0.8 + 0.4 * grit)
    return tile.clamp(0, 1)


@dataclass(frozen=True)
class BackgroundBank:
    """N sampled backgrounds as stacked tensors (N = 1 for a clip, a few for a crop batch).

    Attributes:
        ground: (N, 3, T, T) ground tiles; ``ground_scale`` (N,) metres per tile.
        wall: (N, 3, T, T) wall tiles; ``wall_scale`` (N,) metres per tile.
        wall_radius: (N,) metres, wall_height: (N,) metres.
        sky_top, sky_horizon: (N, 3) sky gradient colours.
        fog: (N,) fog density per metre (distance haze toward the horizon colour).
    """

    ground: torch.Tensor
    ground_scale: torch.Tensor
    wall: torch.Tensor
    wall_scale: torch.Tensor
    wall_radius: torch.Tensor
    wall_height: torch.Tensor
    sky_top: torch.Tensor
    sky_horizon: torch.Tensor
    fog: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.ground.shape[0])


def sample_backgrounds(
    rng: np.random.Generator, n: int = 1, wall_radius: tuple[float, float] = (14.0, 30.0)
) -> BackgroundBank:
    """Sample ``n`` backgrounds (textures, wall size, sky, fog)."""
    g, w, gs, ws, wr, wh, st, sh, fog = [], [], [], [], [], [], [], [], []
    for _ in range(n):
        g.append(make_tile(rng, str(rng.choice(TILE_KINDS))))
        w.append(make_tile(rng, str(rng.choice(TILE_KINDS))))
        gs.append(rng.uniform(0.5, 4.0))
        ws.append(rng.uniform(0.8, 6.0))
        wr.append(rng.uniform(*wall_radius))
        wh.append(rng.uniform(2.0, 15.0))
        st.append(_color(rng, 0.5, 1.0))
        sh.append(_color(rng, 0.6, 1.0))
        fog.append(rng.uniform(0.0, 0.04))
    f = lambda x: torch.tensor(np.array(x), dtype=torch.float32)  # noqa: E731
    return BackgroundBank(
        torch.stack(g), f(gs), torch.stack(w), f(ws), f(wr), f(wh), torch.stack(st), torch.stack(sh), f(fog)
    )


def _sample_tile(tiles: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """tiles (B, 3, T, T), u/v (B, H, W) in tile units (wrapping) -> (B, H, W, 3)."""
    grid = torch.stack([torch.frac(u) * 2 - 1, torch.frac(v) * 2 - 1], dim=-1)
    grid = torch.where(grid < -1, grid + 2, grid)  # frac of negatives is negative
    out = F.grid_sample(tiles, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def render_backgrounds(
    bank: BackgroundBank,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    height: int,
    width: int,
    index: torch.Tensor | None = None,
    scale: int = 1,
) -> torch.Tensor:
    """Render backgrounds seen by B cameras.

    Args:
        bank: the backgrounds.
        K: (3, 3) or (B, 3, 3) intrinsics; R (B, 3, 3), t (B, 3) world->camera.
        height, width: image size.
        index: (B,) int64 background of each camera (default all 0).
        scale: render at 1/scale of the resolution and upsample bilinearly (faster).
    Returns:
        (B, H, W, 3) float32 colours in [0, 1].
    """
    R = torch.as_tensor(R, dtype=torch.float32)
    t = torch.as_tensor(t, dtype=torch.float32)
    b = R.shape[0]
    K = torch.as_tensor(K, dtype=torch.float32).expand(b, 3, 3)
    if index is None:
        index = torch.zeros(b, dtype=torch.int64)
    if scale > 1:
        hs, ws = -(-height // scale), -(-width // scale)
        S = torch.tensor([[1.0 / scale, 0, 0.5 / scale - 0.5], [0, 1.0 / scale, 0.5 / scale - 0.5], [0, 0, 1]])
        small = render_backgrounds(bank, S @ K, R, t, hs, ws, index, 1)
        up = F.interpolate(small.permute(0, 3, 1, 2), scale_factor=scale, mode="bilinear", align_corners=False)
        return up[:, :, :height, :width].permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # (H, W, 3)
    d_cam = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(K), pix)
    d = torch.einsum("bji,bhwj->bhwi", R, d_cam)  # R^T d_cam
    d = d / d.norm(dim=-1, keepdim=True)
    c = -torch.einsum("bji,bj->bi", R, t)[:, None, None, :]  # (B,1,1,3)
    sel = lambda x: x[index][:, None, None]  # noqa: E731
    rad, wall_h = sel(bank.wall_radius), sel(bank.wall_height)
    # wall: |c_xz + s d_xz| = rad, positive root (the camera is inside the cylinder)
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    bq = 2 * (c[..., 0] * d[..., 0] + c[..., 2] * d[..., 2])
    cq = c[..., 0] ** 2 + c[..., 2] ** 2 - rad**2
    s_wall = (-bq + torch.sqrt((bq**2 - 4 * a * cq).clamp_min(0))) / (2 * a).clamp_min(1e-9)
    s_ground = torch.where(d[..., 1] < -1e-6, -c[..., 1] / d[..., 1].clamp(max=-1e-6), torch.full_like(a, float("inf")))
    hit_ground = s_ground < s_wall
    p_wall = c + s_wall[..., None] * d
    hit_wall = ~hit_ground & (p_wall[..., 1] < wall_h)
    p_ground = c + torch.where(hit_ground, s_ground, torch.zeros_like(s_ground))[..., None] * d
    gscale, wscale = sel(bank.ground_scale), sel(bank.wall_scale)
    ground = _sample_tile(bank.ground[index], p_ground[..., 0] / gscale, p_ground[..., 2] / gscale)
    theta = torch.atan2(p_wall[..., 2], p_wall[..., 0])
    wall = _sample_tile(bank.wall[index], theta * rad / wscale, -p_wall[..., 1] / wscale)
    elev = d[..., 1].clamp(0, 1)[..., None]
    top, hor = bank.sky_top[index][:, None, None], bank.sky_horizon[index][:, None, None]
    sky = hor * (1 - elev) + top * elev
    img = torch.where(hit_ground[..., None], ground, torch.where(hit_wall[..., None], wall, sky))
    dist = torch.where(hit_ground, s_ground, torch.where(hit_wall, s_wall, torch.full_like(a, 1e3)))
    haze = 1 - torch.exp(-sel(bank.fog) * dist)
    img = torch.where((hit_ground | hit_wall)[..., None], img * (1 - haze[..., None]) + hor * haze[..., None], img)
    return img.clamp(0, 1)
