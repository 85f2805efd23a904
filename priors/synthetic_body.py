"""A procedurally generated body model in SMPL's file format (no SMPL data involved).

The body is a smooth implicit union of round cones and ellipsoids laid along SMPL's
24-joint skeleton (rest pose like SMPL's: arms out to the sides, y up, facing +z, pelvis
near the origin), meshed with surface nets into a closed, outward-oriented triangle mesh,
then relaxed and projected back onto the implicit surface. Everything SMPL's file holds is
derived from that: distance-to-bone skinning weights smoothed over the mesh, ten documented
shape directions, pose correctives (bulges at bending joints) and a joint regressor of convex
vertex weights. See ``docs/body-model.md``.

Public API: :func:`make_synthetic_body_model`, :func:`write_smpl_pickle`,
:func:`guess_vertex_ids`, :data:`GENERATOR_VERSION`, :data:`SHAPE_DIRECTIONS`.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from hmrflow.priors.skeleton import JOINT_INDEX, JOINT_NAMES, N_JOINTS, PARENTS

log = logging.getLogger(__name__)

#: bump when the generated arrays change (cache key of the synthetic model)
GENERATOR_VERSION = 1

#: meaning of each of the 10 shape coefficients (betas) of the synthetic model, per +1
SHAPE_DIRECTIONS: tuple[str, ...] = (
    "stature: uniform scale about the pelvis, +4.5 % (about +8 cm height)",
    "mass: girth of torso (+10 %) and limbs (+8 %) plus a forward belly",
    "leg length: knees 2.5 cm and ankles/feet 5 cm lower",
    "arm length: elbows 2 cm and wrists/hands 4 cm further out",
    "shoulder width: shoulders and arms 2 cm further out on each side",
    "hip width: hips 1.5 cm further out, pelvis and thighs wider",
    "torso length: chest, neck, head and arms 3.5 cm higher (legs unchanged)",
    "head size: head 7 % larger about the head joint, neck 5 % thicker",
    "limb musculature: upper arms, forearms, thighs and calves 12 % thicker",
    "torso depth: chest/belly front-to-back depth +12 % (chest and belly forward)",
)
N_BETAS = len(SHAPE_DIRECTIONS)

# ----------------------------------------------------------------------------- skeleton
#: rest joint positions (metres) of the left side and the midline; right = mirrored x
_REST_JOINTS_LEFT: dict[str, tuple[float, float, float]] = {
    "pelvis": (0.0, -0.225, 0.025),
    "left_hip": (0.070, -0.315, 0.020),
    "spine1": (0.0, -0.110, 0.000),
    "left_knee": (0.105, -0.670, 0.015),
    "spine2": (0.0, 0.020, 0.005),
    "left_ankle": (0.090, -1.085, -0.025),
    "spine3": (0.0, 0.075, 0.030),
    "left_foot": (0.118, -1.145, 0.105),
    "neck": (0.0, 0.290, 0.015),
    "left_collar": (0.080, 0.192, 0.022),
    "head": (0.0, 0.355, 0.055),
    "left_shoulder": (0.174, 0.235, 0.005),
    "left_elbow": (0.428, 0.213, -0.025),
    "left_wrist": (0.683, 0.221, -0.028),
    "left_hand": (0.766, 0.213, -0.040),
}


def rest_skeleton(seed: int = 0) -> np.ndarray:
    """(24,3) float64 rest joint positions; ``seed != 0`` jitters proportions by a few %."""
    j = np.zeros((N_JOINTS, 3))
    for name, p in _REST_JOINTS_LEFT.items():
        j[JOINT_INDEX[name]] = p
        if name.startswith("left_"):
            j[JOINT_INDEX["right_" + name[5:]]] = (-p[0], p[1], p[2])
    if seed:
        rng = np.random.default_rng(seed)
        s_leg, s_arm, s_torso = 1.0 + 0.03 * rng.standard_normal(3)
        legs = [JOINT_INDEX[f"{s}_{n}"] for s in ("left", "right") for n in ("knee", "ankle", "foot")]
        arms = [JOINT_INDEX[f"{s}_{n}"] for s in ("left", "right") for n in ("elbow", "wrist", "hand")]
        hips = [JOINT_INDEX[f"{s}_hip"] for s in ("left", "right")]
        j[legs, 1] = j[JOINT_INDEX["left_hip"], 1] + (j[legs, 1] - j[JOINT_INDEX["left_hip"], 1]) * s_leg
        for i in arms:
            sh = JOINT_INDEX[("left" if j[i, 0] > 0 else "right") + "_shoulder"]
            j[i, 0] = j[sh, 0] + (j[i, 0] - j[sh, 0]) * s_arm
        upper = [i for i in range(N_JOINTS) if j[i, 1] > j[0, 1] + 1e-9 and i not in hips]
        j[upper, 1] = j[0, 1] + (j[upper, 1] - j[0, 1]) * s_torso
    return j


def _mirror(p: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-p[0], p[1], p[2])


# ---------------------------------------------------------------------------- implicit body
@dataclass(frozen=True)
class _Prim:
    """One implicit primitive: ``cone`` (a, b, ra, rb) or ``ellipsoid`` (c, radii)."""

    kind: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]  # cone end, or ellipsoid semi-axes
    ra: float = 0.0
    rb: float = 0.0
    joint: int = 0  # joint whose bone this primitive belongs to (region label)
    blend: float = 0.03  # smooth-union width used when joining this primitive


def _body_primitives(J: np.ndarray) -> list[_Prim]:
    """Round cones and ellipsoids of the body around the rest skeleton ``J`` (24,3)."""
    P = lambda name: tuple(J[JOINT_INDEX[name]])  # noqa: E731
    y_pel, y_sh = J[0, 1], J[JOINT_INDEX["left_shoulder"], 1]
    hd = J[JOINT_INDEX["head"]]
    prims = [
        # torso: pelvis, waist, chest, shoulder girdle
        _Prim("ellipsoid", (0.0, y_pel - 0.03, 0.0), (0.160, 0.125, 0.105), joint=0),
        _Prim("ellipsoid", (0.0, -0.075, 0.018), (0.138, 0.175, 0.098), joint=3, blend=0.07),
        _Prim("ellipsoid", (0.0, 0.110, 0.022), (0.162, 0.165, 0.106), joint=9, blend=0.07),
        _Prim("cone", (0.155, y_sh - 0.01, 0.0), (-0.155, y_sh - 0.01, 0.0), 0.060, 0.060, joint=9, blend=0.05),
        # neck and head
        _Prim("cone", (0.0, 0.22, 0.0), (0.0, hd[1] + 0.04, 0.025), 0.056, 0.052, joint=12),
        _Prim("ellipsoid", (0.0, hd[1] + 0.098, hd[2] - 0.015), (0.077, 0.105, 0.094), joint=15),
    ]
    for side in ("left", "right"):
        sgn = 1.0 if side == "left" else -1.0
        hip, knee, ankle, foot = (P(f"{side}_{n}") for n in ("hip", "knee", "ankle", "foot"))
        sh, el, wr, hand = (P(f"{side}_{n}") for n in ("shoulder", "elbow", "wrist", "hand"))
        ji = lambda n: JOINT_INDEX[f"{side}_{n}"]  # noqa: E731, B023 (called within this iteration only)
        prims += [
            _Prim("cone", (hip[0] + 0.008 * sgn, hip[1] + 0.01, hip[2]), knee, 0.082, 0.054, joint=ji("hip")),
            _Prim("cone", knee, (ankle[0], ankle[1] + 0.02, ankle[2]), 0.052, 0.036, joint=ji("knee")),
            _Prim("ellipsoid", (knee[0], knee[1] - 0.13, knee[2] - 0.022), (0.050, 0.110, 0.050), joint=ji("knee")),
            _Prim(
                "cone",
                (ankle[0], ankle[1] - 0.045, ankle[2] - 0.040),
                (foot[0] + 0.004 * sgn, foot[1] - 0.005, foot[2] + 0.060),
                0.040,
                0.032,
                joint=ji("foot"),
            ),
            _Prim("cone", sh, el, 0.052, 0.040, joint=ji("shoulder")),
            _Prim("cone", el, wr, 0.040, 0.029, joint=ji("elbow")),
            _Prim(
                "ellipsoid",
                (hand[0] + 0.005 * sgn, hand[1] - 0.002, hand[2] + 0.005),
                (0.092, 0.026, 0.047),
                joint=ji("hand"),
            ),
        ]
    return prims


def _prim_sdf(p: np.ndarray, q: _Prim) -> np.ndarray:
    """Approximate signed distance (N,) of points ``p`` (N,3) to one primitive."""
    if q.kind == "cone":
        a, b = np.asarray(q.a), np.asarray(q.b)
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
        return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (q.ra + t * (q.rb - q.ra))
    c, r = np.asarray(q.a), np.asarray(q.b)
    d = p - c
    k0 = np.linalg.norm(d / r, axis=1)
    k1 = np.maximum(np.linalg.norm(d / (r * r), axis=1), 1e-12)
    return k0 * (k0 - 1.0) / k1


def _body_sdf(p: np.ndarray, prims: list[_Prim]) -> tuple[np.ndarray, np.ndarray]:
    """Smooth union (polynomial smooth-min, blend width ``prim.blend``) of the primitives.

    Returns the field (N,) (negative inside) and the joint of the nearest primitive (N,).
    """
    each = np.stack([_prim_sdf(p, q) for q in prims], axis=1)  # (N, P)
    owner = np.array([q.joint for q in prims])[np.argmin(each, axis=1)]
    d = each[:, 0]
    for i in range(1, each.shape[1]):
        e, k = each[:, i], prims[i].blend
        hmix = np.maximum(k - np.abs(d - e), 0.0) / k
        d = np.minimum(d, e) - hmix * hmix * k * 0.25
    return d, owner


# ------------------------------------------------------------------------------- meshing
def _surface_nets(field: np.ndarray, origin: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Naive surface nets over a grid ``field`` (nx,ny,nz), negative inside.

    One vertex per cell crossed by the surface (mean of its edge crossings), one quad per
    grid edge with a sign change, wound so that normals point outward (towards positive
    field). Quads are split into triangles along the shorter diagonal.
    Returns vertices (V,3) and faces (F,3) int64.
    """
    inside = field < 0
    nx, ny, nz = field.shape
    cell_shape = (nx - 1, ny - 1, nz - 1)
    acc = np.zeros(cell_shape + (3,))
    cnt = np.zeros(cell_shape)
    corners = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1).astype(float)
    quads = []
    for axis in range(3):
        sl0 = [slice(None)] * 3
        sl1 = [slice(None)] * 3
        sl0[axis] = slice(0, -1)
        sl1[axis] = slice(1, None)
        f0, f1 = field[tuple(sl0)], field[tuple(sl1)]
        change = inside[tuple(sl0)] != inside[tuple(sl1)]
        idx = np.argwhere(change)  # grid points i (edge from i to i + e_axis)
        t = f0[change] / (f0[change] - f1[change])
        pts = corners[tuple(sl0)][change].copy()
        pts[:, axis] += t
        # add the crossing to every cell containing this edge (up to 4 cells)
        o1, o2 = [a for a in range(3) if a != axis]
        for d1 in (-1, 0):
            for d2 in (-1, 0):
                c = idx.copy()
                c[:, o1] += d1
                c[:, o2] += d2
                ok = (c >= 0).all(1) & (c < np.array(cell_shape)).all(1)
                np.add.at(acc, (c[ok, 0], c[ok, 1], c[ok, 2]), pts[ok])
                np.add.at(cnt, (c[ok, 0], c[ok, 1], c[ok, 2]), 1)
        # quad around the edge, counter-clockwise about +axis in the (u, v) = cyclic order
        u, v = (axis + 1) % 3, (axis + 2) % 3
        ring = []
        for du, dv in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
            c = idx.copy()
            c[:, u] += du
            c[:, v] += dv
            ring.append(c)
        ring = np.stack(ring, 1)  # (E, 4, 3)
        outward_pos = inside[tuple(sl0)][change]  # inside at i -> outside along +axis
        ring[~outward_pos] = ring[~outward_pos][:, ::-1]
        quads.append(ring)
    active = cnt > 0
    vid = -np.ones(cell_shape, dtype=np.int64)
    vid[active] = np.arange(int(active.sum()))
    verts = acc[active] / cnt[active][:, None] * h + origin
    q = np.concatenate(quads, 0)
    q = vid[q[..., 0], q[..., 1], q[..., 2]]  # (Q, 4)
    if (q < 0).any():
        raise RuntimeError("surface nets: surface touches the grid border")
    d02 = np.linalg.norm(verts[q[:, 0]] - verts[q[:, 2]], axis=1)
    d13 = np.linalg.norm(verts[q[:, 1]] - verts[q[:, 3]], axis=1)
    split02 = d02 <= d13
    tri_a = np.where(split02[:, None], q[:, [0, 1, 2]], q[:, [0, 1, 3]])
    tri_b = np.where(split02[:, None], q[:, [0, 2, 3]], q[:, [1, 2, 3]])
    faces = np.concatenate([tri_a, tri_b], 0)
    return verts, faces.astype(np.int64)


def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (E,2) of a triangle mesh and how many faces use each (E,)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = np.sort(e, axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    return edges, counts


def is_watertight(faces: np.ndarray) -> bool:
    """Closed and consistently oriented: every directed edge appears once, its reverse once."""
    d = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    n = int(faces.max()) + 1
    key = d[:, 0] * n + d[:, 1]
    rkey = d[:, 1] * n + d[:, 0]
    if len(np.unique(key)) != len(key):
        return False
    return bool(np.isin(rkey, key).all())


def _vertex_neighbours(n: int, faces: np.ndarray) -> sp.csr_matrix:
    """Row-normalised (V,V) uniform adjacency (mean of the 1-ring)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = np.concatenate([e, e[:, ::-1]], 0)
    a = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a.data[:] = 1.0
    deg = np.asarray(a.sum(1)).ravel()
    return sp.diags(1.0 / deg) @ a


def _project_to_surface(v: np.ndarray, prims: list[_Prim], iters: int = 3) -> np.ndarray:
    """Newton steps along the field gradient onto its zero level set."""
    eps = 1e-4
    for _ in range(iters):
        f, _o = _body_sdf(v, prims)
        g = np.stack(
            [(_body_sdf(v + eps * e, prims)[0] - _body_sdf(v - eps * e, prims)[0]) / (2 * eps) for e in np.eye(3)], 1
        )
        v = v - (f / np.maximum((g * g).sum(1), 1e-8))[:, None] * g
    return v


def _relax(v: np.ndarray, faces: np.ndarray, prims: list[_Prim], rounds: int = 4) -> np.ndarray:
    """Taubin smoothing (no shrink) alternated with projection onto the implicit surface."""
    avg = _vertex_neighbours(len(v), faces)
    for _ in range(rounds):
        for lam in (0.5, -0.53, 0.5, -0.53):
            v = v + lam * (avg @ v - v)
        v = _project_to_surface(v, prims)
    return v


# ------------------------------------------------------------------------------ skinning
def _bone_segments(J: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per joint, the segments of its bone (joint -> child, or joint -> tip for leaves)."""
    ji = JOINT_INDEX
    segs: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(N_JOINTS)]
    segs[0] = [(J[0], J[ji["spine1"]]), (J[ji["left_hip"]], J[ji["right_hip"]])]
    chain = {"spine1": "spine2", "spine2": "spine3", "spine3": "neck", "neck": "head"}
    for side in ("left", "right"):
        for a, b in (
            ("hip", "knee"),
            ("knee", "ankle"),
            ("ankle", "foot"),
            ("collar", "shoulder"),
            ("shoulder", "elbow"),
            ("elbow", "wrist"),
            ("wrist", "hand"),
        ):
            chain[f"{side}_{a}"] = f"{side}_{b}"
    for a, b in chain.items():
        segs[ji[a]] = [(J[ji[a]], J[ji[b]])]
    head = J[ji["head"]]
    segs[ji["head"]] = [(head, head + np.array([0.0, 0.15, -0.01]))]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        f = J[ji[f"{side}_foot"]]
        segs[ji[f"{side}_foot"]] = [(f, f + np.array([0.008 * sgn, -0.005, 0.07]))]
        h = J[ji[f"{side}_hand"]]
        segs[ji[f"{side}_hand"]] = [(h, h + np.array([0.085 * sgn, -0.003, 0.01]))]
    return segs


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (N,), parameter t (N,) and closest point (N,3) of points to segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    c = a + t[:, None] * ab
    return np.linalg.norm(p - c, axis=1), t, c


@dataclass
class _BoneCoords:
    """Per vertex and bone: distance (V,24), parameter along the bone (V,24), closest point (V,24,3)."""

    dist: np.ndarray
    t: np.ndarray
    closest: np.ndarray


def _bone_coords(v: np.ndarray, J: np.ndarray) -> _BoneCoords:
    n = len(v)
    dist = np.full((n, N_JOINTS), np.inf)
    tt = np.zeros((n, N_JOINTS))
    cl = np.zeros((n, N_JOINTS, 3))
    for j, segs in enumerate(_bone_segments(J)):
        for k, (a, b) in enumerate(segs):
            d, t, c = _segment_distance(v, a, b)
            better = d < dist[:, j]
            dist[better, j] = d[better]
            tt[better, j] = t[better] if k == 0 else 0.0  # secondary pelvis segment: rigid
            cl[better, j] = c[better]
    return _BoneCoords(dist, tt, cl)


def _tree_neighbours() -> np.ndarray:
    """(24,24) bool: joint itself, its parent and its children."""
    m = np.eye(N_JOINTS, dtype=bool)
    for j, p in enumerate(PARENTS):
        if p >= 0:
            m[j, p] = m[p, j] = True
    return m


def _skinning_weights(
    v: np.ndarray, faces: np.ndarray, bc: _BoneCoords, tau: float = 0.012, smooth_iters: int = 6
) -> np.ndarray:
    """(V,24) weights: softmax of bone distances among the nearest bone's tree neighbours,
    then smoothed over the mesh (rows stay convex)."""
    nearest = np.argmin(bc.dist, axis=1)
    allowed = _tree_neighbours()[nearest]  # (V,24)
    logits = -(bc.dist - bc.dist.min(1, keepdims=True)) / tau
    w = np.where(allowed, np.exp(logits), 0.0)
    w /= w.sum(1, keepdims=True)
    avg = _vertex_neighbours(len(v), faces)
    for _ in range(smooth_iters):
        w = 0.5 * w + 0.5 * (avg @ w)
    w[w < 1e-4] = 0.0
    return w / w.sum(1, keepdims=True)


# -------------------------------------------------------------------------- shape / pose
def _joint_offsets(J: np.ndarray, spec: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """(24,3) joint displacements from ``{name: (dx, dy, dz)}`` (left names mirror to right)."""
    T = np.zeros((N_JOINTS, 3))
    for name, d in spec.items():
        if name.startswith("left_"):
            T[JOINT_INDEX[name]] = d
            T[JOINT_INDEX["right_" + name[5:]]] = _mirror(d)
        else:
            T[JOINT_INDEX[name]] = d
    return T


def _bone_children(J: np.ndarray) -> np.ndarray:
    """(24,) the joint at the far end of each bone (itself for leaves and the pelvis)."""
    end = np.arange(N_JOINTS)
    for j in range(N_JOINTS):
        kids = [c for c in range(N_JOINTS) if PARENTS[c] == j]
        if len(kids) == 1:
            end[j] = kids[0]
        elif j == JOINT_INDEX["spine3"]:
            end[j] = JOINT_INDEX["neck"]
    return end


def _translation_field(v: np.ndarray, w: np.ndarray, bc: _BoneCoords, T: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(V,3) vertex displacement interpolating joint offsets ``T`` along each bone, skinned."""
    per_bone = (1.0 - bc.t)[..., None] * T[None] + bc.t[..., None] * T[end][None]  # (V,24,3)
    return np.einsum("vj,vjc->vc", _fade_thighs_at_crotch(v, w), per_bone)


def _fade_thighs_at_crotch(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weights with the thigh columns faded towards the midline (x = 0).

    Both thighs meet at the crotch; without this, sideways or radial thigh changes would
    tear the crotch apart or push the inner thighs through each other.
    """
    w = w.copy()
    fade = np.clip(np.abs(v[:, 0]) / 0.06, 0.0, 1.0) ** 2
    for name in ("left_hip", "right_hip"):
        w[:, JOINT_INDEX[name]] *= fade
    return w


def _radial_field(
    v: np.ndarray, w: np.ndarray, bc: _BoneCoords, g: np.ndarray, axes: tuple[int, ...] = (0, 1, 2)
) -> np.ndarray:
    """(V,3) displacement ``sum_j w_j g_j (v - closest_j)`` (girth change per bone)."""
    r = v[:, None, :] - bc.closest  # (V,24,3)
    mask = np.zeros(3)
    mask[list(axes)] = 1.0
    return np.einsum("vj,j,vjc->vc", _fade_thighs_at_crotch(v, w), g, r) * mask


def _girth(spec: dict[str, float]) -> np.ndarray:
    g = np.zeros(N_JOINTS)
    for name, val in spec.items():
        names = [name] if not name.startswith("left_") else [name, "right_" + name[5:]]
        for n in names:
            g[JOINT_INDEX[n]] = val
    return g


def _shape_dirs(v: np.ndarray, faces: np.ndarray, J: np.ndarray, w: np.ndarray, bc: _BoneCoords) -> np.ndarray:
    """(V,3,10) shape directions, in the order of :data:`SHAPE_DIRECTIONS`."""
    end = _bone_children(J)
    torso = ("pelvis", "spine1", "spine2", "spine3")
    limbs = ("left_hip", "left_knee", "left_shoulder", "left_elbow")
    arm_chain = ("left_shoulder", "left_elbow", "left_wrist", "left_hand")
    upper = ("neck", "head", "left_collar") + arm_chain
    dirs = []
    # 0 stature
    dirs.append(0.045 * (v - J[0]))
    # 1 mass: girth + belly
    g = _girth(
        {
            **{n: 0.10 for n in torso},
            **{n: 0.08 for n in limbs},
            "neck": 0.05,
            "left_collar": 0.05,
            "left_ankle": 0.03,
            "left_wrist": 0.03,
        }
    )
    belly = np.zeros_like(v)
    wb = w[:, [JOINT_INDEX["spine1"], JOINT_INDEX["spine2"], JOINT_INDEX["pelvis"]]].sum(1)
    front = np.clip((v[:, 2] - 0.02) / 0.09, 0.0, 1.0)
    belly[:, 2] = 0.02 * wb * front
    dirs.append(_radial_field(v, w, bc, g) + belly)
    # 2 leg length
    dirs.append(
        _translation_field(
            v,
            w,
            bc,
            _joint_offsets(J, {"left_knee": (0, -0.025, 0), "left_ankle": (0, -0.05, 0), "left_foot": (0, -0.05, 0)}),
            end,
        )
    )
    # 3 arm length
    dirs.append(
        _translation_field(
            v,
            w,
            bc,
            _joint_offsets(J, {"left_elbow": (0.02, 0, 0), "left_wrist": (0.04, 0, 0), "left_hand": (0.04, 0, 0)}),
            end,
        )
    )
    # 4 shoulder width
    dirs.append(
        _translation_field(
            v, w, bc, _joint_offsets(J, {"left_collar": (0.006, 0, 0), **{n: (0.02, 0, 0) for n in arm_chain}}), end
        )
    )
    # 5 hip width
    t5 = _joint_offsets(
        J,
        {"left_hip": (0.015, 0, 0), "left_knee": (0.012, 0, 0), "left_ankle": (0.01, 0, 0), "left_foot": (0.01, 0, 0)},
    )
    dirs.append(
        _translation_field(v, w, bc, t5, end) + _radial_field(v, w, bc, _girth({"pelvis": 0.08, "left_hip": 0.05}))
    )
    # 6 torso length
    t6 = _joint_offsets(J, {"spine2": (0, 0.01, 0), "spine3": (0, 0.02, 0), **{n: (0, 0.035, 0) for n in upper}})
    dirs.append(_translation_field(v, w, bc, t6, end))
    # 7 head size
    wh = w[:, JOINT_INDEX["head"]] + 0.5 * w[:, JOINT_INDEX["neck"]]
    head = 0.07 * wh[:, None] * (v - J[JOINT_INDEX["head"]])
    dirs.append(head + _radial_field(v, w, bc, _girth({"neck": 0.05})))
    # 8 limb musculature
    dirs.append(_radial_field(v, w, bc, _girth({n: 0.12 for n in limbs})))
    # 9 torso depth (z only)
    dirs.append(_radial_field(v, w, bc, _girth({n: 0.12 for n in torso}), axes=(2,)))
    # relax directions 1..9 over the mesh (the crotch and armpits meet opposite radial vectors)
    avg = _vertex_neighbours(len(v), faces)
    for k in range(1, len(dirs)):
        for _ in range(4):
            dirs[k] = 0.5 * dirs[k] + 0.5 * (avg @ dirs[k])
    return np.stack(dirs, axis=2)


#: joint names without their side prefix
JOINT_NAMES_STEM: tuple[str, ...] = tuple(n.replace("left_", "").replace("right_", "") for n in JOINT_NAMES)

#: pose-corrective bulge amplitude (metres at a 90 degree bend) per joint name stem
_BULGE = {
    "hip": 0.010,
    "knee": 0.012,
    "ankle": 0.005,
    "foot": 0.003,
    "spine1": 0.006,
    "spine2": 0.006,
    "spine3": 0.006,
    "neck": 0.005,
    "collar": 0.004,
    "head": 0.003,
    "shoulder": 0.010,
    "elbow": 0.012,
    "wrist": 0.005,
    "hand": 0.003,
}


def _pose_dirs(v: np.ndarray, J: np.ndarray, w: np.ndarray, bc: _BoneCoords) -> np.ndarray:
    """(V,3,207) pose correctives: a radial bulge around each joint growing with its bend.

    SMPL's pose feature is ``(R_j - I)`` flattened for joints 1..23; ``1 - cos(theta) =
    -trace(R_j - I)/2``, so putting ``-bulge/2`` on the three diagonal entries gives a
    displacement ``(1 - cos theta) * bulge`` (zero at rest, full size at 90 degrees). The
    bulge pushes the skin of the two bones meeting at the joint away from the bone axis,
    fading with the distance along the parent bone (it offsets the volume loss of linear
    blend skinning on the inside of a bend).
    """
    out = np.zeros((len(v), 3, 9 * (N_JOINTS - 1)))
    for j in range(1, N_JOINTS):
        p = PARENTS[j]
        amp = _BULGE[JOINT_NAMES_STEM[j]]
        axis = J[j] - J[p]
        axis = axis / np.linalg.norm(axis)
        r = v - bc.closest[:, j]
        rn = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-9)
        near = np.argsort(np.linalg.norm(v - J[j], axis=1))[:30]
        sigma = 0.6 * max(float(np.median(bc.dist[near, j])), 0.03)
        fall = np.exp(-(((v - J[j]) @ axis) ** 2) / (2 * sigma * sigma)) * np.clip(w[:, j] + w[:, p], 0.0, 1.0)
        bulge = amp * fall[:, None] * rn
        for d in (0, 4, 8):
            out[:, :, 9 * (j - 1) + d] = -0.5 * bulge
    return out


# --------------------------------------------------------------------------- regressor
def _joint_regressor(v: np.ndarray, J: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(24,V) convex vertex weights whose weighted mean is each rest joint.

    Candidates for joint j: vertices mostly skinned to j or its parent, within a slab
    across the bone at the joint. Weights from non-negative least squares with a
    sum-to-one row and a small pull towards uniform (keeps them spread and smooth).
    """
    R = np.zeros((N_JOINTS, len(v)))
    end = _bone_children(J)
    for j in range(N_JOINTS):
        p = PARENTS[j]
        axis = J[j] - J[p] if p >= 0 else J[JOINT_INDEX["spine1"]] - J[0]
        if j in (JOINT_INDEX["left_foot"], JOINT_INDEX["right_foot"]) or end[j] == j:
            axis = J[j] - J[p]
        axis = axis / np.linalg.norm(axis)
        region = w[:, j] + (w[:, p] if p >= 0 else 0.0)
        for c in range(N_JOINTS):
            if PARENTS[c] == j:
                region = region + w[:, c]
        for half in (0.02, 0.035, 0.05, 0.08, 0.12):
            sel = np.flatnonzero(
                (np.abs((v - J[j]) @ axis) < half) & (region > 0.3) & (np.linalg.norm(v - J[j], axis=1) < 0.25)
            )
            if len(sel) < 8:
                continue
            X = v[sel].T  # (3, n)
            n = len(sel)
            lam, mu = 10.0, 0.02
            A = np.vstack([X, lam * np.ones((1, n)), mu * np.eye(n)])
            b = np.concatenate([J[j], [lam], mu * np.full(n, 1.0 / n)])
            x, _ = scipy.optimize.nnls(A, b, maxiter=50 * n)
            x = x / x.sum()
            if np.linalg.norm(X @ x - J[j]) < 0.002:
                break
        R[j, sel] = x
    return R


# ---------------------------------------------------------------------------- keypoints
def guess_vertex_ids(v_template: np.ndarray, joints: np.ndarray) -> dict[str, int]:
    """Vertices for smplx's 21 extra joints (face, feet, finger tips) of a non-SMPL mesh.

    Picks the vertex nearest to a target point placed relative to the rest joints
    (y up, facing +z, left = +x) -- works for any SMPL-like rest mesh.
    """
    ji = JOINT_INDEX
    head = joints[ji["head"]]
    targets: dict[str, np.ndarray] = {
        "nose": head + np.array([0.0, 0.07, 0.15]),
        "leye": head + np.array([0.033, 0.11, 0.15]),
        "reye": head + np.array([-0.033, 0.11, 0.15]),
        "lear": head + np.array([0.10, 0.085, -0.015]),
        "rear": head + np.array([-0.10, 0.085, -0.015]),
    }
    for side, s, L in (("left", 1.0, "L"), ("right", -1.0, "R")):
        ank, ft = joints[ji[f"{side}_ankle"]], joints[ji[f"{side}_foot"]]
        sole = ank[1] - 0.09
        targets[f"{L}BigToe"] = np.array([ft[0] - 0.02 * s, sole, ft[2] + 0.09])
        targets[f"{L}SmallToe"] = np.array([ft[0] + 0.035 * s, sole, ft[2] + 0.06])
        targets[f"{L}Heel"] = np.array([ank[0], sole, ank[2] - 0.09])
        hand = joints[ji[f"{side}_hand"]]
        pre = side[0]
        for k, (name, dz) in enumerate(
            (("thumb", 0.06), ("index", 0.035), ("middle", 0.012), ("ring", -0.012), ("pinky", -0.035))
        ):
            dx = 0.06 if name == "thumb" else 0.1 - 0.008 * abs(k - 2)
            targets[f"{pre}{name}"] = hand + np.array([dx * s, 0.0, dz])
    ids: dict[str, int] = {}
    for name, t in targets.items():  # nearest vertex not taken yet (tips of a mitt are close)
        order = np.argsort(np.linalg.norm(v_template - t, axis=1))
        ids[name] = int(next(i for i in order if int(i) not in ids.values()))
    return ids


# ------------------------------------------------------------------------------- driver
def _mesh_body(J: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray, list[_Prim]]:
    """Closed mesh of the implicit body on a grid of spacing ``h`` (origin nudged until the
    surface-nets result is watertight; the first try succeeds for the default body)."""
    prims = _body_primitives(J)
    lo = np.array([-0.98, -1.28, -0.26])
    hi = np.array([0.98, 0.66, 0.32])
    for attempt in range(8):
        origin = lo + h * 0.37 * np.array([1.0, 0.61, 0.29]) * attempt
        axes = [np.arange(origin[i], hi[i], h) for i in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        f, _ = _body_sdf(grid.reshape(-1, 3), prims)
        f = f.reshape(grid.shape[:3])
        f[f == 0.0] = 1e-9
        v, faces = _surface_nets(f, origin, h)
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
        if is_watertight(faces) and _euler_characteristic(len(v), faces) == 2:
            return v, faces, prims
        log.debug("surface nets attempt %d not manifold, nudging grid", attempt)
    raise RuntimeError("could not mesh the synthetic body watertight")


def _euler_characteristic(n_vertices: int, faces: np.ndarray) -> int:
    edges, _ = edge_face_counts(faces)
    return n_vertices - len(edges) + len(faces)


def make_synthetic_body_model(seed: int = 0, grid_step: float = 0.0235) -> dict[str, np.ndarray]:
    """Generate the procedural body model as SMPL's arrays (deterministic for a seed).

    Returns a dict with ``v_template`` (V,3), ``shapedirs`` (V,3,10), ``posedirs`` (V,3,207),
    ``J_regressor`` (24,V) ``scipy.sparse.csc_matrix``, ``weights`` (V,24),
    ``kintree_table`` (2,24) int64, ``f`` (F,3) int64 and ``J`` (24,3) rest joints; all
    float arrays float64. ``seed=0`` is the canonical body; other seeds jitter proportions.
    """
    J = rest_skeleton(seed)
    v, faces, prims = _mesh_body(J, grid_step)
    v = _relax(v, faces, prims)
    bc = _bone_coords(v, J)
    w = _skinning_weights(v, faces, bc)
    shapedirs = _shape_dirs(v, faces, J, w, bc)
    posedirs = _pose_dirs(v, J, w, bc)
    R = _joint_regressor(v, J, w)
    kintree = np.stack([PARENTS, np.arange(N_JOINTS)]).astype(np.int64)
    log.debug("synthetic body: %d vertices, %d faces", len(v), len(faces))
    return {
        "v_template": v.astype(np.float64),
        "shapedirs": shapedirs.astype(np.float64),
        "posedirs": posedirs.astype(np.float64),
        "J_regressor": sp.csc_matrix(R),
        "weights": w.astype(np.float64),
        "kintree_table": kintree,
        "f": faces.astype(np.int64),
        "J": (R @ v).astype(np.float64),
    }


def write_smpl_pickle(arrays: Mapping[str, object], path: str | os.PathLike[str]) -> None:
    """Write ``arrays`` as an SMPL-style pickle (plain NumPy/SciPy objects, protocol 2), atomically."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(dict(arrays), fh, protocol=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
