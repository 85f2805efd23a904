"""Marker positions of a track: the body model's joints (and optional surface markers).

``joints``: the 24 SMPL kinematic joints (``hmrflow.priors.skeleton.JOINT_NAMES``).
``surface``: the 21 mesh vertices smplx selects as keypoints (nose, eyes, ears, big/small
toes and heels, finger tips), i.e. virtual markers on the skin; their vertex indices come
from smplx's table for SMPL, or, for the synthetic body, from the closest vertices to the
same landmarks (:func:`hmrflow.priors.synthetic_body.guess_vertex_ids`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from hmrflow.jobs.export.reading import TrackData
from hmrflow.priors.skeleton import JOINT_NAMES

#: smplx's order of the 21 vertex keypoints (``VertexJointSelector``: face, feet, left tips, right tips).
SURFACE_MARKERS: tuple[str, ...] = (
    "nose",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
    "left_thumb_tip",
    "left_index_tip",
    "left_middle_tip",
    "left_ring_tip",
    "left_pinky_tip",
    "right_thumb_tip",
    "right_index_tip",
    "right_middle_tip",
    "right_ring_tip",
    "right_pinky_tip",
)
MarkerSet = Literal["joints", "joints+surface"]


def marker_names(markers: MarkerSet = "joints") -> list[str]:
    """Names of the markers :func:`track_positions` returns, in order."""
    names = list(JOINT_NAMES)
    if markers == "joints+surface":
        names += list(SURFACE_MARKERS)
    elif markers != "joints":
        raise ValueError(f"unknown marker set {markers!r}: use 'joints' or 'joints+surface'")
    return names


def track_positions(track: TrackData, body_model: Any, markers: MarkerSet = "joints", chunk: int = 256) -> np.ndarray:
    """(T, M, 3) float64 marker positions in the OpenCV camera frame, metres.

    Runs ``body_model(rotmats, betas, transl)`` (a :class:`hmrflow.priors.body_model.BodyModel`)
    in chunks of ``chunk`` frames.
    """
    import torch

    names = marker_names(markers)
    t = len(track)
    out = np.zeros((t, len(names), 3), np.float64)
    rot = track.rotmats().astype(np.float32)
    betas = np.broadcast_to(track.betas.astype(np.float32), (t, 10))
    with torch.no_grad():
        for a in range(0, t, chunk):
            b = min(t, a + chunk)
            res = body_model(
                torch.from_numpy(rot[a:b]),
                torch.from_numpy(np.array(betas[a:b], np.float32)),
                torch.from_numpy(np.array(track.transl[a:b], np.float32)),
            )
            pts = res.joints if markers == "joints" else torch.cat([res.joints, res.extra_joints], dim=1)
            out[a:b] = pts.double().cpu().numpy()
    return out


def rest_joints(track: TrackData, body_model: Any) -> np.ndarray:
    """(24, 3) float64 joints of the track's shaped body in the rest pose (SMPL frame, metres)."""
    import torch

    with torch.no_grad():
        return body_model.rest_joints(torch.from_numpy(track.betas.astype(np.float32)[None]))[0].double().numpy()
