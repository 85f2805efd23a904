"""Vectorised z-buffer triangle rasteriser in pure torch (CPU or GPU, deterministic).

Pixel convention (OpenCV): pixel ``(x, y)`` covers ``[x - 0.5, x + 0.5) x [y - 0.5, y + 0.5)``
and its centre is the integer point ``(x, y)``; a vertex ``X`` in the camera frame (x right,
y down, z forward) projects to ``u = fx X/Z + cx``, ``v = fy Y/Z + cy``.  A pixel belongs to a
triangle when its centre lies inside the projected triangle (edges included).

How it works, without a per-triangle loop:

1. project vertices; drop faces with a vertex closer than ``near`` (this also drops
   everything behind the camera) and, optionally, back faces;
2. enumerate every candidate pixel of every face's bounding box (``repeat_interleave``),
   in chunks of at most ``max_candidates`` so memory stays bounded;
3. keep the candidates whose centre is inside (edge functions), compute the
   perspective-correct depth ``1 / sum(b_i / z_i)``;
4. pack ``(depth bits, face index)`` into one int64 key (positive float32 bit patterns
   order like the floats) and ``scatter_reduce(amin)`` it per pixel: the nearest face wins,
   ties go to the lower face index, so the result does not depend on thread scheduling.

Several images are rasterised in one call: every vertex carries its image index
(``vert_image``), and every face an instance id (a person, an occluder).  Optionally the
*coverage* of each instance is counted on an enlarged canvas ignoring all other instances
(the pixels it would cover if rendered alone), which gives visibility fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_KEY_EMPTY = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class RasterOutput:
    """Rasteriser result for ``B`` images of ``H x W`` pixels.

    Attributes:
        rgb: (B, H, W, 3) float32 shaded colour in [0, 1], 0 where no face.
        depth: (B, H, W) float32 camera-frame z of the visible surface, ``inf`` where empty.
        instance: (B, H, W) int64 instance id of the visible face, -1 where empty.
        face: (B, H, W) int64 index of the visible face, -1 where empty.
        coverage: (n_instances,) int64 pixels each instance covers when rendered alone on
            the enlarged canvas (see ``coverage_margin``), or None when not requested.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    instance: torch.Tensor
    face: torch.Tensor
    coverage: torch.Tensor | None

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: some face is visible."""
        return self.instance >= 0


def project(verts: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(..., 3) camera-frame points and (..., 3, 3) intrinsics -> (..., 2) pixel coordinates."""
    z = verts[..., 2:3]
    xy = verts[..., :2] / z
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy, s = K[..., 0, 2, None], K[..., 1, 2, None], K[..., 0, 1, None]
    u = fx * xy[..., 0:1] + s * xy[..., 1:2] + cx
    v = fy * xy[..., 1:2] + cy
    return torch.cat([u, v], dim=-1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) vertices, (F, 3) faces -> (F, 3) unit normals ``(v1 - v0) x (v2 - v0)``."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade_faces(
    normals: torch.Tensor,
    centres: torch.Tensor,
    colors: torch.Tensor,
    light_dir: torch.Tensor,
    light_color: torch.Tensor,
    ambient: torch.Tensor,
) -> torch.Tensor:
    """Lambert + ambient flat shading, two-sided (normals are turned toward the camera).

    Args:
        normals: (F, 3) unit face normals, camera frame.
        centres: (F, 3) face centres, camera frame (the camera is at the origin).
        colors: (F, 3) albedo in [0, 1].
        light_dir: (F, 3) unit direction from the surface toward the light, camera frame.
        light_color: (F, 3) light intensity per channel.
        ambient: (F, 3) ambient intensity per channel.
    Returns:
        (F, 3) shaded colours clamped to [0, 1].
    """
    facing = (normals * centres).sum(-1, keepdim=True) > 0  # normal points away from camera
    n = torch.where(facing, -normals, normals)
    lambert = (n * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    return (colors * (ambient + light_color * lambert)).clamp(0.0, 1.0)


def _expand_per_image(x: torch.Tensor | None, b: int, default: tuple[float, ...], ref: torch.Tensor) -> torch.Tensor:
    """None, (3,) or (B, 3) -> (B, 3) float32 on ``ref``'s device."""
    if x is None:
        x = torch.tensor(default, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32, device=ref.device)
    return x.expand(b, 3) if x.ndim == 1 else x


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    height: int,
    width: int,
    *,
    vert_image: torch.Tensor | None = None,
    n_images: int | None = None,
    face_instance: torch.Tensor | None = None,
    n_instances: int | None = None,
    face_colors: torch.Tensor | None = None,
    light_dir: torch.Tensor | None = None,
    light_color: torch.Tensor | None = None,
    ambient: torch.Tensor | None = None,
    near: float = 0.05,
    cull_backfaces: bool = False,
    coverage_margin: float | None = None,
    max_candidates: int = 2_000_000,
) -> RasterOutput:
    """Rasterise triangles (camera frame) into ``n_images`` images with a z-buffer.

    Args:
        verts: (V, 3) float vertices in the camera frame of their image (OpenCV axes).
        faces: (F, 3) int64 vertex indices into ``verts``; all three vertices of a face must
            belong to the same image.
        K: (3, 3) intrinsics shared by all images, or (B, 3, 3) one per image.
        height, width: image size in pixels.
        vert_image: (V,) int64 image index of each vertex (default: all in image 0).
        n_images: number of images B (default: ``max(vert_image) + 1``, or K's batch size).
        face_instance: (F,) int64 instance id >= 0 of each face (default 0).
        n_instances: number of instance ids (default ``max(face_instance) + 1``).
        face_colors: (F, 3) albedo in [0, 1] (default light grey).
        light_dir: (3,) or (B, 3) direction toward the light in the camera frame
            (default from the camera's upper left); normalised here.
        light_color: (3,) or (B, 3) directional light intensity (default 0.7).
        ambient: (3,) or (B, 3) ambient intensity (default 0.35).
        near: faces with any vertex at ``z < near`` are dropped (metres).
        cull_backfaces: drop faces whose counter-clockwise normal points away from the camera
            (correct for closed, outward-wound meshes; halves the work).
        coverage_margin: when set, also count each instance's pixels when rendered alone on
            a canvas enlarged by this fraction of the image size on every side.
        max_candidates: candidate pixels processed at once (bounds memory).
    Returns:
        RasterOutput.
    """
    device = verts.device
    verts = verts.to(torch.float32)
    faces = faces.to(device=device, dtype=torch.int64)
    nv, nf = verts.shape[0], faces.shape[0]
    if vert_image is None:
        vert_image = torch.zeros(nv, dtype=torch.int64, device=device)
    vert_image = vert_image.to(device=device, dtype=torch.int64)
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    if n_images is None:
        n_images = int(K.shape[0]) if K.ndim == 3 else (int(vert_image.max()) + 1 if nv else 1)
    b = n_images
    Kb = K.expand(b, 3, 3) if K.ndim == 2 else K
    if face_instance is None:
        face_instance = torch.zeros(nf, dtype=torch.int64, device=device)
    face_instance = face_instance.to(device=device, dtype=torch.int64)
    if n_instances is None:
        n_instances = int(face_instance.max()) + 1 if nf else 0
    if face_colors is None:
        face_colors = torch.full((nf, 3), 0.8, device=device)
    face_colors = face_colors.to(device=device, dtype=torch.float32)
    ldir = _expand_per_image(light_dir, b, (-0.4, -0.6, -0.7), verts)
    ldir = ldir / ldir.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lcol = _expand_per_image(light_color, b, (0.7, 0.7, 0.7), verts)
    amb = _expand_per_image(ambient, b, (0.35, 0.35, 0.35), verts)

    hw = height * width
    zkey = torch.full((b * hw,), _KEY_EMPTY, dtype=torch.int64, device=device)
    coverage = torch.zeros(n_instances, dtype=torch.int64, device=device) if coverage_margin is not None else None

    # --- per-face geometry, culling -------------------------------------------------------
    face_img = vert_image[faces[:, 0]] if nf else torch.zeros(0, dtype=torch.int64, device=device)
    z = verts[:, 2]
    keep = (z[faces] >= near).all(dim=1)
    normals = face_normals(verts, faces) if nf else torch.zeros(0, 3, device=device)
    centres = verts[faces].mean(dim=1) if nf else torch.zeros(0, 3, device=device)
    if cull_backfaces:
        keep &= (normals * centres).sum(-1) < 0
    fidx = torch.nonzero(keep).squeeze(1)
    uv = project(verts, Kb[vert_image]) if nv else torch.zeros(0, 2, device=device)
    tri = uv[faces[fidx]]  # (Fk, 3, 2)
    tz = z[faces[fidx]]  # (Fk, 3)

    # candidate canvas: the image, or the enlarged coverage canvas
    if coverage_margin is not None:
        mx, my = int(round(coverage_margin * width)), int(round(coverage_margin * height))
    else:
        mx = my = 0
    lo_x, hi_x, lo_y, hi_y = -mx, width - 1 + mx, -my, height - 1 + my
    x0 = torch.ceil(tri[..., 0].amin(1) - 1e-6).clamp(lo_x, hi_x + 1).to(torch.int64)
    x1 = torch.floor(tri[..., 0].amax(1) + 1e-6).clamp(lo_x - 1, hi_x).to(torch.int64)
    y0 = torch.ceil(tri[..., 1].amin(1) - 1e-6).clamp(lo_y, hi_y + 1).to(torch.int64)
    y1 = torch.floor(tri[..., 1].amax(1) + 1e-6).clamp(lo_y - 1, hi_y).to(torch.int64)
    bw = (x1 - x0 + 1).clamp_min(0)
    bh = (y1 - y0 + 1).clamp_min(0)
    counts = bw * bh
    nz = counts > 0
    sel = torch.nonzero(nz).squeeze(1)
    fidx, tri, tz, x0, y0, bw, counts = fidx[sel], tri[sel], tz[sel], x0[sel], y0[sel], bw[sel], counts[sel]
    cw = width + 2 * mx
    canvas = cw * (height + 2 * my)

    # --- chunks of at most max_candidates candidate pixels -------------------------------
    csum = torch.cumsum(counts, 0)
    start = 0
    n_faces_k = int(fidx.shape[0])
    while start < n_faces_k:
        base = int(csum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(csum, base + max_candidates, right=True))
        stop = max(stop, start + 1)
        sl = slice(start, stop)
        start = stop
        cnt = counts[sl]
        rep = torch.repeat_interleave(torch.arange(cnt.shape[0], device=device), cnt)
        first = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(rep.shape[0], device=device) - first[rep]
        w_r = bw[sl][rep]
        px = x0[sl][rep] + local % w_r
        py = y0[sl][rep] + local // w_r
        t = tri[sl][rep]  # (N, 3, 2)
        pxf, pyf = px.to(torch.float32), py.to(torch.float32)
        ax, ay = t[:, 0, 0], t[:, 0, 1]
        bx, by = t[:, 1, 0], t[:, 1, 1]
        qx, qy = t[:, 2, 0], t[:, 2, 1]
        area = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
        w0 = (qx - bx) * (pyf - by) - (qy - by) * (pxf - bx)
        w1 = (ax - qx) * (pyf - qy) - (ay - qy) * (pxf - qx)
        w2 = (bx - ax) * (pyf - ay) - (by - ay) * (pxf - ax)
        sgn = torch.sign(area)
        inside = (w0 * sgn >= 0) & (w1 * sgn >= 0) & (w2 * sgn >= 0) & (area != 0)
        idx = torch.nonzero(inside).squeeze(1)
        rep, px, py = rep[idx], px[idx], py[idx]
        gface = fidx[sl][rep]
        if coverage is not None:
            key = face_instance[gface] * canvas + (py + my) * cw + (px + mx)
            uniq = torch.unique(key)
            coverage += torch.bincount(torch.div(uniq, canvas, rounding_mode="floor"), minlength=n_instances)
            in_img = (px >= 0) & (px < width) & (py >= 0) & (py < height)
            idx2 = torch.nonzero(in_img).squeeze(1)
            idx, rep, px, py, gface = idx[idx2], rep[idx2], px[idx2], py[idx2], gface[idx2]
        area_i = area[idx]
        bary = torch.stack([w0[idx], w1[idx], w2[idx]], dim=1) / area_i[:, None]
        inv_z = (bary / tz[sl][rep]).sum(1)
        depth = (1.0 / inv_z).clamp_min(near)
        dbits = depth.to(torch.float32).view(torch.int32).to(torch.int64)
        key = (dbits << 32) | gface
        pix = face_img[gface] * hw + py * width + px
        zkey.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)

    # --- resolve winners ------------------------------------------------------------------
    valid = zkey != _KEY_EMPTY
    face_map = torch.where(valid, zkey & 0xFFFFFFFF, torch.full_like(zkey, -1))
    depth_map = torch.where(
        valid, (zkey >> 32).to(torch.int32).view(torch.float32), torch.full_like(zkey, float("inf"), dtype=torch.float32)
    )
    inst_map = torch.full_like(zkey, -1)
    rgb = torch.zeros(b * hw, 3, dtype=torch.float32, device=device)
    vidx = torch.nonzero(valid).squeeze(1)
    if vidx.numel():
        vis_faces = face_map[vidx]
        uf, inv = torch.unique(vis_faces, return_inverse=True)
        fi = face_img[uf]
        shaded = shade_faces(normals[uf], centres[uf], face_colors[uf], ldir[fi], lcol[fi], amb[fi])
        rgb[vidx] = shaded[inv]
        inst_map[vidx] = face_instance[vis_faces]
    return RasterOutput(
        rgb=rgb.view(b, height, width, 3),
        depth=depth_map.view(b, height, width),
        instance=inst_map.view(b, height, width),
        face=face_map.view(b, height, width),
        coverage=coverage,
    )
