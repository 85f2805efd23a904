"""The virtual gait marker set: skin markers picked on the body model's own mesh.

hmrflow has no motion-capture markers, so it places *virtual* ones on the mesh, where a gait
lab would stick them (a Plug-in-Gait-like full-body set, plus medial knee, ankle and elbow
markers as in the Cleveland Clinic / OpenCap sets).  Each marker is a mesh vertex chosen on
the shaped rest mesh of the body model in use (SMPL files or the procedural body) by a rule:

* an **anchor** point inside the body, placed from the rest joints (SMPL frame: x = the
  subject's left, y = up, z = forward; T-pose, palms down);
* a **direction** (unit, same frame; the x component is mirrored for the right side);
* a **skin region**: the SMPL joints whose skinning region the vertex must belong to (its
  largest skinning weight), which keeps a ray through one leg from landing on the other;
  where the region has such vertices, only those with most of their skinning weight on the
  region's joints count (``purity``: skin that moves with that segment alone).

The marker is where the ray from the anchor leaves the skin: among the region's vertices
within 1.5 cm of the ray (widened until some are found), the one farthest along it.  Arm rules
are written for the T-pose: with the arm horizontal and the palm down, the lateral epicondyle
points up (+y) and the radial styloid forward (+z); in the model's default pose (arms hanging,
docs/opensim.md) they are lateral and anterior as in a lab.

Each marker is attached to the OpenSim body of :data:`MARKERS` (``segment``); ``weight`` is
its inverse-kinematics weight (markers on bony landmarks near a joint centre, where skin
follows two segments, weigh less).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hmrflow.priors.skeleton import JOINT_INDEX

Anchor = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class MarkerRule:
    """One virtual marker.

    name: marker name (``L``/``R`` prefix for sided markers).
    segment: OpenSim body it is attached to (``pelvis``, ``femur_l``, ``torso`` ...).
    anchor: ``(J (24, 3) rest joints, s) -> (3,)`` a point inside the body; ``s`` = +1 left, -1 right.
    direction: (3,) outward direction for the left side (x is mirrored on the right).
    region: SMPL joint names (``{side}`` filled in) whose skinning regions may hold the vertex.
    weight: inverse-kinematics weight.
    side: +1 for left and midline markers, -1 for right ones (mirrors the anchor's offsets).
    purity: least share of the vertex's skinning weight on the region's joints, where the
        region has such vertices near the ray (skin that moves with the segment alone).
    """

    name: str
    segment: str
    anchor: Anchor
    direction: tuple[float, float, float]
    region: tuple[str, ...]
    weight: float = 1.0
    side: float = 1.0
    purity: float = 0.9


def _j(name: str, side: str | None = None) -> int:
    return JOINT_INDEX[name.format(side=side) if side else name]


def _lerp(a: str, b: str, t: float, offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Anchor:
    """Anchor on the segment from joint ``a`` to joint ``b`` (``{side}`` filled in), plus an
    offset whose x is mirrored for the right side."""

    def f(j: np.ndarray, s: float) -> np.ndarray:
        side = "left" if s > 0 else "right"
        p = (1.0 - t) * j[_j(a, side)] + t * j[_j(b, side)]
        return p + np.array([offset[0] * s, offset[1], offset[2]])

    return f


def _pelvis_anchor(x_share: float, dy: float) -> Anchor:
    """A point ``dy`` above the hip centres' midpoint, at ``x_share`` of the hip's lateral offset."""

    def f(j: np.ndarray, s: float) -> np.ndarray:
        hip = j[_j("{side}_hip", "left" if s > 0 else "right")]
        mid = 0.5 * (j[_j("left_hip")] + j[_j("right_hip")])
        return np.array([mid[0] + x_share * (hip[0] - mid[0]), mid[1] + dy, mid[2]])

    return f


def _centre(a: str, dy: float = 0.0, b: str | None = None, t: float = 0.0) -> Anchor:
    """Unsided anchor: joint ``a`` (or a point between ``a`` and ``b``) raised by ``dy``."""

    def f(j: np.ndarray, s: float) -> np.ndarray:
        p = j[_j(a)] if b is None else (1.0 - t) * j[_j(a)] + t * j[_j(b)]
        return p + np.array([0.0, dy, 0.0])

    return f


_LEG = ("{side}_hip", "{side}_knee")
_SHANK = ("{side}_knee", "{side}_ankle")
_FOOT = ("{side}_ankle", "{side}_foot")
_ARM = ("{side}_shoulder", "{side}_elbow")
_FOREARM = ("{side}_elbow", "{side}_wrist")
_HAND = ("{side}_wrist", "{side}_hand")
_TRUNK = ("spine1", "spine2", "spine3", "neck", "left_collar", "right_collar")

#: Sided rules, written for the left side (``{side}``); the right side mirrors them.
_SIDED: tuple[MarkerRule, ...] = (
    MarkerRule("ASI", "pelvis", _pelvis_anchor(1.0, 0.08), (0.0, 0.0, 1.0), ("pelvis",)),
    MarkerRule("PSI", "pelvis", _pelvis_anchor(0.45, 0.08), (0.0, 0.0, -1.0), ("pelvis",)),
    MarkerRule("THI", "femur_{s}", _lerp("{side}_hip", "{side}_knee", 0.55), (1.0, 0.0, 0.0), _LEG),
    MarkerRule("THA", "femur_{s}", _lerp("{side}_hip", "{side}_knee", 0.4), (0.0, 0.0, 1.0), _LEG),
    MarkerRule("KNE", "femur_{s}", _lerp("{side}_knee", "{side}_knee", 0.0), (1.0, 0.0, 0.0), _LEG, 0.5),
    MarkerRule("KNM", "femur_{s}", _lerp("{side}_knee", "{side}_knee", 0.0), (-1.0, 0.0, 0.0), _LEG, 0.5),
    MarkerRule("TIB", "tibia_{s}", _lerp("{side}_knee", "{side}_ankle", 0.5), (1.0, 0.0, 0.0), _SHANK),
    MarkerRule("SHA", "tibia_{s}", _lerp("{side}_knee", "{side}_ankle", 0.35), (0.0, 0.0, 1.0), _SHANK),
    MarkerRule("ANK", "tibia_{s}", _lerp("{side}_ankle", "{side}_ankle", 0.0), (1.0, 0.0, 0.0), _SHANK + _FOOT, 0.5),
    MarkerRule("MED", "tibia_{s}", _lerp("{side}_ankle", "{side}_ankle", 0.0), (-1.0, 0.0, 0.0), _SHANK + _FOOT, 0.5),
    MarkerRule(
        "HEE", "calcn_{s}", _lerp("{side}_ankle", "{side}_ankle", 0.0, (0.0, -0.04, 0.0)), (0.0, 0.0, -1.0), _FOOT
    ),
    MarkerRule("TOE", "calcn_{s}", _lerp("{side}_ankle", "{side}_foot", 0.9), (0.0, 1.0, 0.0), _FOOT),
    MarkerRule("5MT", "calcn_{s}", _lerp("{side}_ankle", "{side}_foot", 0.75), (1.0, 0.0, 0.0), _FOOT),
    MarkerRule(
        "SHO",
        "torso",
        _lerp("{side}_shoulder", "{side}_shoulder", 0.0),
        (0.0, 1.0, 0.0),
        ("{side}_collar",),
    ),
    MarkerRule("UPA", "humerus_{s}", _lerp("{side}_shoulder", "{side}_elbow", 0.5), (0.0, 1.0, 0.0), _ARM),
    MarkerRule("UPF", "humerus_{s}", _lerp("{side}_shoulder", "{side}_elbow", 0.6), (0.0, 0.0, 1.0), _ARM),
    MarkerRule("ELB", "humerus_{s}", _lerp("{side}_elbow", "{side}_elbow", 0.0), (0.0, 1.0, 0.0), _ARM + _FOREARM, 0.5),
    MarkerRule(
        "ELM", "humerus_{s}", _lerp("{side}_elbow", "{side}_elbow", 0.0), (0.0, -1.0, 0.0), _ARM + _FOREARM, 0.5
    ),
    MarkerRule("FRA", "radius_{s}", _lerp("{side}_elbow", "{side}_wrist", 0.5), (0.0, 1.0, 0.0), _FOREARM),
    MarkerRule("WRA", "radius_{s}", _lerp("{side}_wrist", "{side}_wrist", 0.0), (0.0, 0.0, 1.0), _FOREARM + _HAND),
    MarkerRule("WRB", "radius_{s}", _lerp("{side}_wrist", "{side}_wrist", 0.0), (0.0, 0.0, -1.0), _FOREARM + _HAND),
    MarkerRule("FIN", "hand_{s}", _lerp("{side}_wrist", "{side}_hand", 0.8), (0.0, 1.0, 0.0), _HAND),
)
#: Midline rules.
_MIDLINE: tuple[MarkerRule, ...] = (
    MarkerRule("C7", "torso", _centre("neck", -0.02), (0.0, 0.0, -1.0), _TRUNK),
    MarkerRule("T10", "torso", _centre("spine2"), (0.0, 0.0, -1.0), _TRUNK),
    MarkerRule("CLAV", "torso", _centre("neck", -0.05), (0.0, 0.0, 1.0), _TRUNK),
    MarkerRule("STRN", "torso", _centre("spine3", -0.06), (0.0, 0.0, 1.0), _TRUNK),
)


def _sided(rule: MarkerRule, side: str) -> MarkerRule:
    s = 1.0 if side == "left" else -1.0
    d = rule.direction
    return MarkerRule(
        name=("L" if side == "left" else "R") + rule.name,
        segment=rule.segment.format(s="l" if side == "left" else "r"),
        anchor=rule.anchor,
        direction=(d[0] * s, d[1], d[2]),
        region=tuple(r.format(side=side) for r in rule.region),
        weight=rule.weight,
        side=s,
        purity=rule.purity,
    )


#: Every marker, in file order (left side, right side, midline).
MARKERS: tuple[MarkerRule, ...] = (
    *(_sided(r, "left") for r in _SIDED),
    *(_sided(r, "right") for r in _SIDED),
    *_MIDLINE,
)
MARKER_NAMES: tuple[str, ...] = tuple(m.name for m in MARKERS)


def _exit_vertex(
    vertices: np.ndarray, cand: np.ndarray, a: np.ndarray, d: np.ndarray, radii: tuple[float, ...]
) -> int | None:
    """The candidate where the ray ``a + s d`` (s > 0) leaves the skin: among ``cand`` within
    the first radius of ``radii`` that holds any, the one farthest along; None if none does."""
    rel = vertices[cand] - a
    along = rel @ d
    perp = np.linalg.norm(rel - along[:, None] * d, axis=1)
    for radius in radii:
        idx = np.flatnonzero((along > 0) & (perp < radius))
        if idx.size:
            return int(cand[idx[np.argmax(along[idx])]])
    return None


def select_vertices(vertices: np.ndarray, joints: np.ndarray, skin_weights: np.ndarray) -> np.ndarray:
    """Mesh vertex of every marker in :data:`MARKERS`.

    Args:
        vertices: (V, 3) shaped rest-pose mesh (SMPL frame, metres, T-pose).
        joints: (24, 3) the same body's rest joints.
        skin_weights: (V, 24) linear-blend skinning weights.
    Returns:
        (M,) int64 vertex indices, in :data:`MARKERS` order.
    Raises:
        ValueError: a marker's region has no vertex on its ray (not a body-shaped mesh).
    """
    owner = np.argmax(skin_weights, axis=1)
    ids = np.zeros(len(MARKERS), np.int64)
    for k, rule in enumerate(MARKERS):
        cols = [JOINT_INDEX[r] for r in rule.region]
        region = np.isin(owner, cols)
        # prefer skin that moves with the region alone: a vertex half skinned to the next
        # segment (the groin below the ASIS, the top of the heel) drifts when that joint turns
        pure = np.flatnonzero(region & (skin_weights[:, cols].sum(axis=1) >= rule.purity))
        a = rule.anchor(joints, rule.side)
        d = np.asarray(rule.direction, np.float64)
        d = d / np.linalg.norm(d)
        vid = _exit_vertex(vertices, pure, a, d, (0.015, 0.03))
        if vid is None:
            vid = _exit_vertex(vertices, np.flatnonzero(region), a, d, (0.015, 0.03, 0.06, 0.12))
        if vid is None:
            raise ValueError(f"marker {rule.name}: no vertex of {rule.region} on its ray; is this a body mesh?")
        ids[k] = vid
    return ids
