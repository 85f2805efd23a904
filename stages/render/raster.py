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


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` along dim 0 for an int64 index (index_select is much faster on CPU)."""
    return x.index_select(0, idx)


def _take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for an (N, k) int64 index into the rows of x: (N, k, *x.shape[1:])."""
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])


def _normals(fv: torch.Tensor) -> torch.Tensor:
    """(F, 3, 3) face vertices -> (F, 3) unit normals."""
    n = torch.linalg.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _check_instances_per_image(face_instance: torch.Tensor, face_img: torch.Tensor, n_instances: int) -> None:
    """Coverage is counted per instance on one canvas: each counted instance must lie in one image."""
    sel = face_instance < n_instances
    if not bool(sel.any()):
        return
    inst, img = face_instance[sel], face_img[sel]
    lo = torch.full((n_instances,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=inst.device)
    hi = torch.full((n_instances,), -1, dtype=torch.int64, device=inst.device)
    lo.scatter_reduce_(0, inst, img, reduce="amin")
    hi.scatter_reduce_(0, inst, img, reduce="amax")
    used = hi >= 0
    if bool((lo[used] != hi[used]).any()):
        raise ValueError("rasterize: with coverage_margin every instance id < n_instances must belong to one image")


class _CoverageBuffers:
    """One byte per pixel of each instance's bounding box (on the enlarged canvas): marks the
    pixels an instance covers ignoring all others."""

    def __init__(
        self, inst: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor, n: int
    ) -> None:
        dev = inst.device
        counted = inst < n
        inst, x0, y0, x1, y1 = inst[counted], x0[counted], y0[counted], x1[counted], y1[counted]
        big = torch.iinfo(torch.int64).max
        self.ix0 = torch.full((n,), big, dtype=torch.int64, device=dev).scatter_reduce_(0, inst, x0, "amin")
        self.iy0 = torch.full((n,), big, dtype=torch.int64, device=dev).scatter_reduce_(0, inst, y0, "amin")
        ix1 = torch.full((n,), -big, dtype=torch.int64, device=dev).scatter_reduce_(0, inst, x1, "amax")
        iy1 = torch.full((n,), -big, dtype=torch.int64, device=dev).scatter_reduce_(0, inst, y1, "amax")
        self.iw = (ix1 - self.ix0 + 1).clamp_min(0)
        ih = (iy1 - self.iy0 + 1).clamp_min(0)
        size = self.iw * ih
        self.off = torch.cumsum(size, 0) - size
        self.size = size
        self.n = n
        self.buf = torch.zeros(int(size.sum()), dtype=torch.uint8, device=dev)

    def mark(self, inst: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> None:
        """Mark pixels (px, py) of instances ``inst`` (ids >= n are ignored)."""
        sel = torch.nonzero(inst < self.n).squeeze(1)
        i = _take(inst, sel)
        self.buf[
            _take(self.off, i)
            + (_take(py, sel) - _take(self.iy0, i)) * _take(self.iw, i)
            + _take(px, sel)
            - _take(self.ix0, i)
        ] = 1

    def counts(self) -> torch.Tensor:
        """(n,) int64 marked pixels per instance."""
        owner = torch.repeat_interleave(torch.arange(self.n, device=self.buf.device), self.size)
        return torch.zeros(self.n, dtype=torch.int64, device=self.buf.device).index_add_(
            0, owner, self.buf.to(torch.int64)
        )


def _face_planes(
    tri: torch.Tensor, tz: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face affine functions of the pixel position *relative to the face's box corner*.

    Args:
        tri: (F, 3, 2) projected vertices; tz: (F, 3) their depths (float32: the local
            coordinates keep the numbers small);
        x0, y0: (F,) int64 box corners.
    Returns:
        ``table`` (F, 12) float32: three edge functions ``w_i = a lx + b ly + c`` (>= 0 inside,
        whatever the winding) and ``1/z = a lx + b ly + c`` (1/z is affine in screen space);
        ``ok`` (F,) bool: the face is not degenerate.
    """
    p = tri - torch.stack([x0, y0], -1).to(tri.dtype)[:, None, :]
    ax, ay, bx, by, qx, qy = p[:, 0, 0], p[:, 0, 1], p[:, 1, 0], p[:, 1, 1], p[:, 2, 0], p[:, 2, 1]
    area = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
    sgn = torch.sign(area)
    ok = area.abs() > 1e-8

    def edge(px_, py_, rx, ry):  # w(x, y) = (rx - px)(y - py) - (ry - py)(x - px)
        a = -(ry - py_)
        b_ = rx - px_
        c = (ry - py_) * px_ - (rx - px_) * py_
        return a * sgn, b_ * sgn, c * sgn

    e0, e1, e2 = edge(bx, by, qx, qy), edge(qx, qy, ax, ay), edge(ax, ay, bx, by)
    inv_area = 1.0 / torch.where(ok, area.abs(), torch.ones_like(area))
    iz = 1.0 / tz
    za = (e0[0] * iz[:, 0] + e1[0] * iz[:, 1] + e2[0] * iz[:, 2]) * inv_area
    zb = (e0[1] * iz[:, 0] + e1[1] * iz[:, 1] + e2[1] * iz[:, 2]) * inv_area
    zc = (e0[2] * iz[:, 0] + e1[2] * iz[:, 1] + e2[2] * iz[:, 2]) * inv_area
    table = torch.stack([*e0, *e1, *e2, za, zb, zc], dim=1).to(torch.float32)
    return table, ok


def _enumerate_candidates(
    table: torch.Tensor, bw: torch.Tensor, bh: torch.Tensor, small: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate pixels ``(face, lx, ly)``: every pixel of the box for small faces (box area <=
    ``small``), row spans for the others (less waste for large triangles)."""
    area = bw * bh
    is_small = area <= small
    if bool(is_small.all()):
        return _enumerate_boxes(bw, bh)
    si = torch.nonzero(is_small).squeeze(1)
    li = torch.nonzero(~is_small).squeeze(1)
    r1, x1, y1 = _enumerate_boxes(_take(bw, si), _take(bh, si))
    r2, x2, y2 = _enumerate_spans(_take(table, li), _take(bw, li), _take(bh, li))
    return torch.cat([_take(si, r1), _take(li, r2)]), torch.cat([x1, x2]), torch.cat([y1, y2])


def _enumerate_boxes(bw: torch.Tensor, bh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every pixel of each face's box: ``(face, lx, ly)`` (N,) int64."""
    cnt = bw * bh
    rep = torch.repeat_interleave(torch.arange(cnt.shape[0], device=bw.device), cnt)
    local = torch.arange(rep.shape[0], device=bw.device) - _take(torch.cumsum(cnt, 0) - cnt, rep)
    w = _take(bw, rep)
    ly = torch.div(local, w, rounding_mode="floor")
    return rep, local - ly * w, ly


def _enumerate_spans(
    table: torch.Tensor, bw: torch.Tensor, bh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate pixels of faces, row by row: for each row of a face's box, the x-span allowed
    by the three edge functions (slightly widened; the exact test follows).

    Returns ``(face, lx, ly)`` (N,) int64: local face index and pixel position in its box.
    """
    dev = table.device
    rows = torch.repeat_interleave(torch.arange(bh.shape[0], device=dev), bh)
    first = torch.cumsum(bh, 0) - bh
    ly = torch.arange(rows.shape[0], device=dev) - _take(first, rows)
    tab = table.index_select(0, rows)
    lyd = ly.to(table.dtype)
    lo = torch.zeros_like(lyd)
    hi = (_take(bw, rows) - 1).to(table.dtype)
    for i in range(3):
        a, b_, c = tab[:, 3 * i], tab[:, 3 * i + 1], tab[:, 3 * i + 2]
        rest = b_ * lyd + c  # a x + rest >= 0
        bound = -rest / torch.where(a == 0, torch.ones_like(a), a)
        lo = torch.where(a > 0, torch.maximum(lo, bound), lo)
        hi = torch.where(a < 0, torch.minimum(hi, bound), hi)
        hi = torch.where((a == 0) & (rest < -1e-6), torch.full_like(hi, -1.0), hi)
    lo_i = torch.ceil(lo - 1e-3).clamp_min(0).to(torch.int64)
    hi_i = torch.minimum(torch.floor(hi + 1e-3).to(torch.int64), _take(bw, rows) - 1)
    n = (hi_i - lo_i + 1).clamp_min(0)
    prow = torch.repeat_interleave(torch.arange(rows.shape[0], device=dev), n)
    first2 = torch.cumsum(n, 0) - n
    lx = _take(lo_i, prow) + torch.arange(prow.shape[0], device=dev) - _take(first2, prow)
    return _take(rows, prow), lx, _take(ly, prow)


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

    # --- per-face geometry, culling -------------------------------------------------------
    face_img = vert_image[faces[:, 0]] if nf else torch.zeros(0, dtype=torch.int64, device=device)
    z = verts[:, 2].contiguous()
    fv = _take_rows(verts, faces)  # (F, 3, 3)
    keep = (fv[..., 2] >= near).all(dim=1)
    normals = _normals(fv)
    centres = fv.mean(dim=1)
    if cull_backfaces:
        keep &= (normals * centres).sum(-1) < 0
    uv = project(verts, _take(Kb, vert_image)) if nv else torch.zeros(0, 2, device=device)

    # candidate canvas: the image, or the enlarged coverage canvas
    if coverage_margin is not None:
        mx, my = int(round(coverage_margin * width)), int(round(coverage_margin * height))
    else:
        mx = my = 0

    fidx = torch.nonzero(keep).squeeze(1)
    faces_k = _take(faces, fidx)
    tri = _take_rows(uv, faces_k)  # (Fk, 3, 2)
    x0 = torch.ceil(tri[..., 0].amin(1) - 1e-6).clamp(-mx, width + mx).to(torch.int64)
    x1 = torch.floor(tri[..., 0].amax(1) + 1e-6).clamp(-mx - 1, width - 1 + mx).to(torch.int64)
    y0 = torch.ceil(tri[..., 1].amin(1) - 1e-6).clamp(-my, height + my).to(torch.int64)
    y1 = torch.floor(tri[..., 1].amax(1) + 1e-6).clamp(-my - 1, height - 1 + my).to(torch.int64)
    bw = (x1 - x0 + 1).clamp_min(0)
    bh = (y1 - y0 + 1).clamp_min(0)
    sel = torch.nonzero((bw * bh) > 0).squeeze(1)
    fidx, tri, x0, y0, bw, bh = (
        _take(fidx, sel),
        _take(tri, sel),
        _take(x0, sel),
        _take(y0, sel),
        _take(bw, sel),
        _take(bh, sel),
    )
    table, ok = _face_planes(tri, _take_rows(z[:, None], _take(faces_k, sel))[..., 0], x0, y0)
    sel = torch.nonzero(ok).squeeze(1)
    fidx, table, x0, y0, bw, bh = (
        _take(fidx, sel),
        _take(table, sel),
        _take(x0, sel),
        _take(y0, sel),
        _take(bw, sel),
        _take(bh, sel),
    )
    counts = bw * bh  # upper bound of candidates, used for chunking
    cov = None
    if coverage_margin is not None:
        _check_instances_per_image(face_instance, face_img, n_instances)
        cov = _CoverageBuffers(_take(face_instance, fidx), x0, y0, x0 + bw - 1, y0 + bh - 1, n_instances)

    # --- chunks of at most max_candidates candidate pixels -------------------------------
    csum = torch.cumsum(counts, 0)
    start = 0
    n_faces_k = int(fidx.shape[0])
    while start < n_faces_k:
        base = int(csum[start - 1]) if start > 0 else 0
        stop = max(int(torch.searchsorted(csum, base + max_candidates, right=True)), start + 1)
        sl = slice(start, stop)
        start = stop
        rep, lx, ly = _enumerate_candidates(table[sl], bw[sl], bh[sl])
        tab = table[sl, :9].index_select(0, rep)  # (N, 9) edge functions
        lxf, lyf = lx.to(torch.float32), ly.to(torch.float32)
        w0 = tab[:, 0] * lxf + tab[:, 1] * lyf + tab[:, 2]
        w1 = tab[:, 3] * lxf + tab[:, 4] * lyf + tab[:, 5]
        w2 = tab[:, 6] * lxf + tab[:, 7] * lyf + tab[:, 8]
        inside = torch.nonzero((w0 >= 0) & (w1 >= 0) & (w2 >= 0)).squeeze(1)
        rep, lx, ly = _take(rep, inside), _take(lx, inside), _take(ly, inside)
        rep_g = rep + sl.start
        px = _take(x0, rep_g) + lx
        py = _take(y0, rep_g) + ly
        if cov is not None:
            cov.mark(_take(face_instance, _take(fidx, rep_g)), px, py)
            in_img = torch.nonzero((px >= 0) & (px < width) & (py >= 0) & (py < height)).squeeze(1)
            px, py, rep_g, lx, ly = (
                _take(px, in_img),
                _take(py, in_img),
                _take(rep_g, in_img),
                _take(lx, in_img),
                _take(ly, in_img),
            )
        gface = _take(fidx, rep_g)
        zt = table[:, 9:].index_select(0, rep_g)
        inv_z = zt[:, 0] * lx.to(torch.float32) + zt[:, 1] * ly.to(torch.float32) + zt[:, 2]
        depth = (1.0 / inv_z).clamp_min(near)
        key = (depth.view(torch.int32).to(torch.int64) << 32) | gface
        pix = _take(face_img, gface) * hw + py * width + px
        zkey.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    coverage = cov.counts() if cov is not None else None

    # --- resolve winners ------------------------------------------------------------------
    valid = zkey != _KEY_EMPTY
    face_map = torch.where(valid, zkey & 0xFFFFFFFF, torch.full_like(zkey, -1))
    depth_map = torch.where(
        valid,
        (zkey >> 32).to(torch.int32).view(torch.float32),
        torch.full_like(zkey, float("inf"), dtype=torch.float32),
    )
    inst_map = torch.full_like(zkey, -1)
    rgb = torch.zeros(b * hw, 3, dtype=torch.float32, device=device)
    vidx = torch.nonzero(valid).squeeze(1)
    if vidx.numel():
        vis_faces = _take(face_map, vidx)
        uf, inv = torch.unique(vis_faces, return_inverse=True)
        fi = _take(face_img, uf)
        shaded = shade_faces(
            _take(normals, uf),
            _take(centres, uf),
            _take(face_colors, uf),
            _take(ldir, fi),
            _take(lcol, fi),
            _take(amb, fi),
        )
        rgb[vidx] = shaded[inv]
        inst_map[vidx] = face_instance[vis_faces]
    return RasterOutput(
        rgb=rgb.view(b, height, width, 3),
        depth=depth_map.view(b, height, width),
        instance=inst_map.view(b, height, width),
        face=face_map.view(b, height, width),
        coverage=coverage,
    )
