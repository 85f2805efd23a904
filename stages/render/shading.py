"""Colours for synthetic people and lights: body-part labels from skinning weights, clothing
palettes with left/right and front/back cues, colour temperature.

Part labels are computed once per body model from the rest mesh: each face takes the joint
with the largest summed skinning weight of its vertices, joints are grouped into parts, and
torso and head faces are split into front/back by the direction of their rest-pose normal
(the body faces +z at zero pose).  The labels then ride along with any pose.
"""

from __future__ import annotations

import colorsys

import numpy as np

from hmrflow.priors.skeleton import JOINT_INDEX

PARTS: tuple[str, ...] = (
    "head_front",
    "head_back",
    "torso_front",
    "torso_back",
    "left_arm",
    "left_hand",
    "right_arm",
    "right_hand",
    "left_leg",
    "left_foot",
    "right_leg",
    "right_foot",
)
PART_INDEX = {n: i for i, n in enumerate(PARTS)}
_JOINT_PART = {
    "pelvis": "torso",
    "spine1": "torso",
    "spine2": "torso",
    "spine3": "torso",
    "left_collar": "torso",
    "right_collar": "torso",
    "neck": "head",
    "head": "head",
    "left_shoulder": "left_arm",
    "left_elbow": "left_arm",
    "left_wrist": "left_hand",
    "left_hand": "left_hand",
    "right_shoulder": "right_arm",
    "right_elbow": "right_arm",
    "right_wrist": "right_hand",
    "right_hand": "right_hand",
    "left_hip": "left_leg",
    "left_knee": "left_leg",
    "left_ankle": "left_foot",
    "left_foot": "left_foot",
    "right_hip": "right_leg",
    "right_knee": "right_leg",
    "right_ankle": "right_foot",
    "right_foot": "right_foot",
}


def face_part_labels(weights: np.ndarray, faces: np.ndarray, rest_vertices: np.ndarray) -> np.ndarray:
    """Body part (index into PARTS) of every face.

    Args:
        weights: (V, 24) skinning weights.
        faces: (F, 3) int vertex indices.
        rest_vertices: (V, 3) rest-pose vertices (body facing +z, y up).
    Returns:
        (F,) int64 part labels.
    """
    dominant = np.asarray(weights)[faces].sum(axis=1).argmax(axis=1)  # (F,)
    v = np.asarray(rest_vertices, dtype=np.float64)[faces]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    lut_side = np.empty(24, dtype=object)
    for name, j in JOINT_INDEX.items():
        lut_side[j] = _JOINT_PART[name]
    labels = np.empty(len(faces), dtype=np.int64)
    for f, (j, nz) in enumerate(zip(dominant, normal_z)):
        part = lut_side[j]
        if part in ("torso", "head"):
            part = f"{part}_{'front' if nz >= 0 else 'back'}"
        labels[f] = PART_INDEX[part]
    return labels


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, np.clip(s, 0, 1), np.clip(v, 0, 1)))


def sample_palette(rng: np.random.Generator) -> np.ndarray:
    """(len(PARTS), 3) float32 albedo per part for one person.

    Left limbs take warm hues (red..yellow), right limbs cool hues (cyan..blue), so left and
    right are decidable from colour; the torso back is a darker, desaturated shade of the
    front and the back of the head is hair-coloured while the front is skin.
    """
    skin = _hsv(rng.uniform(0.03, 0.10), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    hair = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.08, 0.45))
    shirt_h, shirt_s, shirt_v = rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.45, 0.95)
    left_h = rng.uniform(-0.03, 0.15)  # warm
    right_h = rng.uniform(0.50, 0.66)  # cool
    pal = {
        "head_front": skin,
        "head_back": hair,
        "torso_front": _hsv(shirt_h, shirt_s, shirt_v),
        "torso_back": _hsv(shirt_h, shirt_s * 0.6, shirt_v * 0.5),
        "left_arm": _hsv(left_h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)),
        "left_hand": skin * 0.9 + _hsv(left_h, 1, 1) * 0.1,
        "right_arm": _hsv(right_h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)),
        "right_hand": skin * 0.9 + _hsv(right_h, 1, 1) * 0.1,
        "left_leg": _hsv(left_h + rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.7)),
        "left_foot": _hsv(left_h, 0.8, rng.uniform(0.15, 0.35)),
        "right_leg": _hsv(right_h + rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.7)),
        "right_foot": _hsv(right_h, 0.8, rng.uniform(0.15, 0.35)),
    }
    return np.stack([pal[p] for p in PARTS]).astype(np.float32)


def color_temperature_rgb(kelvin: float) -> np.ndarray:
    """(3,) approximate RGB tint of a black body at ``kelvin`` (2000-12000 K), max channel 1."""
    t = np.clip(kelvin, 1000.0, 40000.0) / 100.0
    r = 1.0 if t <= 66 else np.clip(1.292936 * (t - 60) ** -0.1332047, 0, 1)
    g = np.clip(0.39008 * np.log(t) - 0.63184, 0, 1) if t <= 66 else np.clip(1.129891 * (t - 60) ** -0.0755148, 0, 1)
    b = 1.0 if t >= 66 else (0.0 if t <= 19 else np.clip(0.543207 * np.log(t - 10) - 1.196254, 0, 1))
    rgb = np.array([r, g, b], dtype=np.float64)
    return (rgb / rgb.max()).astype(np.float32)
