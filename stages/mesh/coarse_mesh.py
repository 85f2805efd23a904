"""The coarse mesh of a body model and the upsampling back to the full mesh (FastMETRO's U).

FastMETRO regresses a coarse mesh (431 of SMPL's 6,890 vertices) and multiplies it by a fixed
sparse matrix U (V x N) to get the full mesh; its decoder masks self-attention between coarse
vertices that are not neighbours.  hmrflow derives all three from whichever body model is in
use, so the same code serves real SMPL and the procedural SMPL-format body:

1. **Decimation**: ``N = round(V / 16)`` vertices (431 for SMPL) chosen by farthest-point
   sampling in geodesic distance on the template's edge graph (Dijkstra over edge lengths),
   starting from the vertex nearest the template's centroid.  Geodesic rather than straight-line
   distance keeps hands, thighs and the torso apart where they nearly touch.
2. **Regions and topology**: every template vertex joins the region of its geodesically nearest
   coarse vertex (one multi-source Dijkstra).  Two coarse vertices are adjacent when a template
   edge joins their regions; a template face whose three vertices lie in three regions gives a
   coarse triangle (the dual of the geodesic Voronoi diagram).
3. **Upsampling**: each template vertex is projected onto the plane of every coarse triangle
   that touches its region; the barycentric coordinates of the projection, clipped to the
   triangle and renormalised, are its row of U (three non-zeros summing to 1), and the triangle
   whose clipped point lies nearest wins.  A coarse vertex maps to itself exactly.

The result depends only on the template and faces; it is cached as ``.npz`` under
``$HMRFLOW_CACHE/coarse_mesh`` keyed by the body model's array hash and ``N``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra

log = logging.getLogger(__name__)

#: Full-mesh vertices per coarse vertex (SMPL: 6890 / 16 -> 431, FastMETRO's coarse mesh).
DECIMATION = 16
#: Bumped when the construction changes (invalidates cached files).
COARSE_MESH_VERSION = 1


@dataclass(frozen=True)
class CoarseMesh:
    """A decimated body mesh and its barycentric upsampling.

    index: (N,) int64 template vertex of each coarse vertex.
    faces: (Fc, 3) int64 coarse triangles.
    adjacency: (N, N) bool, True between coarse vertices whose regions touch, and on the diagonal.
    up_idx: (V, 3) int64 coarse vertices of each full vertex's triangle.
    up_w: (V, 3) float32 barycentric weights (each row sums to 1).
    """

    index: np.ndarray
    faces: np.ndarray
    adjacency: np.ndarray
    up_idx: np.ndarray
    up_w: np.ndarray

    @property
    def n_coarse(self) -> int:
        return int(self.index.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.up_idx.shape[0])

    def upsample_matrix(self) -> sp.csr_matrix:
        """U as a sparse (V, N) matrix."""
        rows = np.repeat(np.arange(self.n_vertices), 3)
        return sp.csr_matrix(
            (self.up_w.reshape(-1).astype(np.float64), (rows, self.up_idx.reshape(-1))),
            shape=(self.n_vertices, self.n_coarse),
        )

    def upsample(self, coarse: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) coarse vertices -> (B, V, 3) full mesh (``U @ coarse``)."""
        return upsample(coarse, torch.as_tensor(self.up_idx), torch.as_tensor(self.up_w))


def upsample(coarse: torch.Tensor, up_idx: torch.Tensor, up_w: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) coarse vertices, (V, 3) indices and weights -> (B, V, 3): each full vertex is
    the weighted sum of its three coarse vertices."""
    picked = coarse[:, up_idx.to(coarse.device)]  # (B, V, 3 corners, 3 xyz)
    return (picked * up_w.to(coarse)[None, :, :, None]).sum(dim=2)


def _edge_graph(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    w = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    w = np.maximum(w, 1e-9)  # a zero weight would read as "no edge" in a sparse matrix
    n = vertices.shape[0]
    g = sp.coo_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
    return g.tocsr()


def _farthest_points(graph: sp.csr_matrix, start: int, n: int) -> np.ndarray:
    chosen = [start]
    dist = dijkstra(graph, indices=start)
    for _ in range(n - 1):
        finite = np.where(np.isfinite(dist), dist, -1.0)  # another component's vertices come last
        nxt = int(np.argmax(finite))
        chosen.append(nxt)
        dist = np.minimum(dist, dijkstra(graph, indices=nxt))
    return np.asarray(chosen, np.int64)


def _clipped_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (M, 3) of points p (M, 3) projected on triangles (a, b, c) (M, 3),
    negative ones clipped to 0 and the rest renormalised."""
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) < 1e-18, 1e-18, den)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - v - w, v, w], axis=1), 0.0, None)
    s = bary.sum(1, keepdims=True)
    return np.where(s > 0, bary / np.where(s > 0, s, 1), 1.0 / 3)


def build_coarse_mesh(vertices: np.ndarray, faces: np.ndarray, n_coarse: Optional[int] = None) -> CoarseMesh:
    """Decimate the template ``vertices`` (V, 3) with ``faces`` (F, 3) to ``n_coarse`` vertices
    (default ``round(V / 16)``) and build the upsampling (see the module docstring)."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    n_v = vertices.shape[0]
    n = int(n_coarse or max(4, round(n_v / DECIMATION)))
    if not 4 <= n <= n_v:
        raise ValueError(f"n_coarse must be in [4, {n_v}], got {n}")
    graph = _edge_graph(vertices, faces)
    start = int(np.argmin(np.linalg.norm(vertices - vertices.mean(0), axis=1)))
    index = _farthest_points(graph, start, n)
    _, _, sources = dijkstra(graph, indices=index, min_only=True, return_predecessors=True)
    slot = np.full(n_v, -1, np.int64)
    slot[index] = np.arange(n)
    region = np.where(sources >= 0, slot[np.maximum(sources, 0)], -1)
    if (region < 0).any():  # a vertex no coarse vertex reaches: join the straight-line nearest
        lost = np.nonzero(region < 0)[0]
        d = np.linalg.norm(vertices[lost, None] - vertices[index][None], axis=2)
        region[lost] = d.argmin(1)

    adjacency = np.eye(n, dtype=bool)
    e = graph.tocoo()
    ra, rb = region[e.row], region[e.col]
    adjacency[ra, rb] = True
    adjacency[rb, ra] = True

    fr = region[faces]
    distinct = (fr[:, 0] != fr[:, 1]) & (fr[:, 1] != fr[:, 2]) & (fr[:, 0] != fr[:, 2])
    cfaces = np.unique(np.sort(fr[distinct], axis=1), axis=0)

    coarse_xyz = vertices[index]
    up_idx = np.repeat(np.arange(n)[region][:, None], 3, axis=1)  # fallback: all weight on own vertex
    up_w = np.zeros((n_v, 3), np.float64)
    up_w[:, 0] = 1.0
    best = np.full(n_v, np.inf)
    # candidate triangles of each vertex: those having its region's coarse vertex as a corner
    tri_of = [[] for _ in range(n)]
    for t, f in enumerate(cfaces):
        for k in f:
            tri_of[k].append(t)
    n_cand = np.array([len(tri_of[r]) for r in region])
    for j in range(int(n_cand.max(initial=0))):
        has = np.nonzero(n_cand > j)[0]
        t = np.array([tri_of[region[v]][j] for v in has], np.int64)
        tri = cfaces[t]
        a, b, c = coarse_xyz[tri[:, 0]], coarse_xyz[tri[:, 1]], coarse_xyz[tri[:, 2]]
        bary = _clipped_barycentric(vertices[has], a, b, c)
        point = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
        d = np.linalg.norm(point - vertices[has], axis=1)
        better = d < best[has]
        sel = has[better]
        best[sel] = d[better]
        up_idx[sel] = tri[better]
        up_w[sel] = bary[better]
    # a coarse vertex is its own image exactly (no rounding through a triangle)
    up_idx[index] = np.arange(n)[:, None]
    up_w[index] = np.array([1.0, 0.0, 0.0])
    return CoarseMesh(
        index=index,
        faces=cfaces.astype(np.int64),
        adjacency=adjacency,
        up_idx=up_idx.astype(np.int64),
        up_w=up_w.astype(np.float32),
    )


def _cache_file(sha256: str, n: int) -> Path:
    from hmrflow.priors.body_model import _cache_dir

    return _cache_dir() / "coarse_mesh" / f"v{COARSE_MESH_VERSION}_{sha256[:16]}_n{n}.npz"


def coarse_mesh_for(body_model, n_coarse: Optional[int] = None) -> CoarseMesh:
    """The coarse mesh of a :class:`~hmrflow.priors.body_model.BodyModel` (its rest template and
    faces), from the cache or built and cached (an unwritable cache only logs a warning)."""
    template = body_model.layer.v_template.detach().cpu().double().numpy()
    n = int(n_coarse or max(4, round(template.shape[0] / DECIMATION)))
    file = _cache_file(body_model.sha256, n)
    if file.is_file():
        try:
            with np.load(file) as z:
                return CoarseMesh(**{k: z[k] for k in ("index", "faces", "adjacency", "up_idx", "up_w")})
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring broken cached coarse mesh %s (%s); rebuilding", file, exc)
    mesh = build_coarse_mesh(template, body_model.faces, n)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **mesh.__dict__)
        os.replace(tmp, file)
    except OSError as exc:
        log.warning("cannot cache the coarse mesh in %s (%s)", file.parent, exc)
    return mesh
