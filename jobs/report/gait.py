"""Gait figures of one track: is the person walking, and if so cadence, step time and speed.

Walking is *sustained horizontal movement of the pelvis*: its speed, averaged over
:data:`SPEED_WINDOW_S` (which cancels the side-to-side sway of each step), stays at or above
:data:`MIN_WALK_SPEED` m/s for at least :data:`MIN_WALK_S` seconds of consecutive frames.

Steps are found where one foot is farthest in front of the other: the separation of the two
ankles along the walking direction peaks once per left step (left foot ahead, close to the
left heel strike) and dips once per right step.  Every such extremum is one step; the time
between consecutive steps within a walking bout is the step time, cadence is
``60 / mean step time`` (steps per minute), and walking speed is the pelvis's horizontal
speed over the same window, averaged over the bouts' frames.

Coordinates: the world frame (``world_transl`` / ``world_global_orient``, y up, metres;
docs/world.md) when the track has it.  Without it the camera frame is used with the
camera's "down" axis as vertical; that assumes a still, level camera, and the result says so
in :attr:`Gait.note`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hmrflow.jobs.export.reading import TrackData
from hmrflow.priors.skeleton import JOINT_INDEX

log = logging.getLogger(__name__)

#: Pelvis speed (m/s) at or above which a person counts as walking; slow pathological gait
#: is around 0.4 m/s, swaying or shuffling in place stays well below 0.3 m/s.
MIN_WALK_SPEED = 0.3
#: Shortest walking bout (s): below about two strides cadence means little.
MIN_WALK_S = 1.5
#: Window (s) of the pelvis speed: about one stride, so the lateral sway of the steps cancels.
SPEED_WINDOW_S = 1.0
#: Shortest time between two steps (s): 0.25 s is 240 steps/min, faster than sprinting.
MIN_STEP_S = 0.25
#: A step's foot-ahead extremum must stand out by this much (m) from its neighbours, so the
#: wobble of a foot estimate on the ground is not counted as a step.
MIN_STEP_PROMINENCE_M = 0.08

Frame = Literal["world", "camera"]
_PELVIS, _L_ANKLE, _R_ANKLE = JOINT_INDEX["pelvis"], JOINT_INDEX["left_ankle"], JOINT_INDEX["right_ankle"]
#: OpenCV camera (y down, z forward) to an upright frame (y up); its own inverse.
_UPRIGHT = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Gait:
    """Gait figures of one track (NaN / 0 where the person does not walk).

    walking: at least one walking bout with two or more steps.
    frame: the coordinates used ("world", or "camera" when the track has no world frame).
    walking_s: total duration of the walking bouts (s).
    n_steps: steps found in the bouts.
    cadence_steps_min: steps per minute (``60 / step_time_s``).
    step_time_s: mean time between consecutive steps (s).
    speed_m_s: mean horizontal speed of the pelvis during the bouts (m/s).
    bouts: (start, stop) row indices of the walking bouts (stop exclusive).
    step_rows: (S,) row indices of the steps; step_sides: (S,) "L" or "R".
    note: a plain-words caveat (empty when none).
    """

    walking: bool
    frame: Frame
    walking_s: float = 0.0
    n_steps: int = 0
    cadence_steps_min: float = float("nan")
    step_time_s: float = float("nan")
    speed_m_s: float = float("nan")
    bouts: tuple[tuple[int, int], ...] = ()
    step_rows: tuple[int, ...] = ()
    step_sides: tuple[str, ...] = ()
    note: str = ""


def upright_joints(
    track: TrackData, body_model: Any, camera_joints: np.ndarray | None = None
) -> tuple[np.ndarray, Frame]:
    """(T, 24, 3) joints in an upright frame (y up, metres) and which frame that is.

    The world frame when the track has one, else the camera frame turned so that the
    camera's down axis points down (``diag(1, -1, -1)``); ``camera_joints`` (T, 24, 3), when
    given, are the track's camera-frame joints already computed.
    """
    from hmrflow.jobs.export import world_as_camera
    from hmrflow.jobs.export.positions import rest_joints, track_positions

    if track.has_world:
        # world_as_camera stores the world pose so that the upright turn gives it back exactly
        as_cam = world_as_camera(track, rest_joints(track, body_model)[0])
        return track_positions(as_cam, body_model, "joints") @ _UPRIGHT.T, "world"
    cam = camera_joints if camera_joints is not None else track_positions(track, body_model, "joints")
    return np.asarray(cam, np.float64) @ _UPRIGHT.T, "camera"


def _segments(frame_idx: np.ndarray, ok: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) row ranges of consecutive frames whose rows are all ``ok``."""
    brk = (np.diff(frame_idx) != 1) | ~ok[1:] | ~ok[:-1]
    edges = np.concatenate([[0], np.nonzero(brk)[0] + 1, [len(frame_idx)]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if ok[a]]


def _window_velocity(xz: np.ndarray, fps: float) -> np.ndarray:
    """(N, 2) horizontal velocity (m/s) over a centred window of :data:`SPEED_WINDOW_S`
    (shrunk at the ends of the segment) of (N, 2) positions."""
    n = len(xz)
    h = max(1, int(round(SPEED_WINDOW_S * fps / 2)))
    i = np.arange(n)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h, n - 1)
    dt = np.maximum(hi - lo, 1)[:, None] / fps
    return (xz[hi] - xz[lo]) / dt


def walking_bouts(root_xz: np.ndarray, frame_idx: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """(start, stop) row ranges where the person walks.

    root_xz: (T, 2) horizontal pelvis position (m), NaN where unknown; frame_idx: (T,) video
    frames (a jump is a gap: bouts never span it).  A bout is a run of consecutive frames with
    windowed speed >= :data:`MIN_WALK_SPEED` lasting at least :data:`MIN_WALK_S`.
    """
    ok = np.isfinite(root_xz).all(axis=1)
    out: list[tuple[int, int]] = []
    min_len = int(np.ceil(MIN_WALK_S * fps))
    for a, b in _segments(np.asarray(frame_idx), ok):
        if b - a < min_len:
            continue
        speed = np.linalg.norm(_window_velocity(root_xz[a:b], fps), axis=1)
        m = np.concatenate([[False], speed >= MIN_WALK_SPEED, [False]])
        d = np.diff(m.astype(np.int8))
        for s, e in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]):
            if e - s >= min_len:
                out.append((a + int(s), a + int(e)))
    return out


def find_steps(joints: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps of one walking bout: row indices (S,) and sides (S,) ("L"/"R"), sorted in time.

    joints: (N, 24, 3) upright joints (y up, metres) of consecutive frames.  A left step is a
    peak of the left-minus-right ankle separation along the walking direction, a right step a
    trough (see the module doc).
    """
    from scipy.signal import find_peaks

    root = joints[:, _PELVIS][:, [0, 2]]
    vel = _window_velocity(root, fps)
    u = vel / np.maximum(np.linalg.norm(vel, axis=1, keepdims=True), 1e-9)  # (N, 2) walking direction
    sep = ((joints[:, _L_ANKLE] - joints[:, _R_ANKLE])[:, [0, 2]] * u).sum(axis=1)  # (N,) m, + = left ahead
    dist = max(1, int(round(MIN_STEP_S * fps)))
    left, _ = find_peaks(sep, distance=dist, prominence=MIN_STEP_PROMINENCE_M)
    right, _ = find_peaks(-sep, distance=dist, prominence=MIN_STEP_PROMINENCE_M)
    rows = np.concatenate([left, right])
    sides = np.array(["L"] * len(left) + ["R"] * len(right))
    order = np.argsort(rows, kind="stable")
    return rows[order], sides[order]


def gait_of_track(track: TrackData, body_model: Any, camera_joints: np.ndarray | None = None) -> Gait:
    """Gait figures of one track (see the module doc); computes the joints with ``body_model``
    (``camera_joints``: see :func:`upright_joints`)."""
    joints, frame = upright_joints(track, body_model, camera_joints)
    return gait_from_joints(joints, track.frame_idx, track.frame_rate, frame)


def gait_from_joints(joints: np.ndarray, frame_idx: np.ndarray, fps: float, frame: Frame = "world") -> Gait:
    """Gait figures from (T, 24, 3) upright joints (y up, metres; NaN rows = unknown) on
    (T,) video ``frame_idx`` at ``fps`` frames per second."""
    joints = np.asarray(joints, np.float64)
    frame_idx = np.asarray(frame_idx, np.int64)
    note = (
        "" if frame == "world" else "no world frame: distances are in the camera frame (assumes a still, level camera)"
    )
    if len(frame_idx) < 2 or not np.isfinite(fps) or fps <= 0:
        return Gait(False, frame, note=note)
    ok_rows = np.isfinite(joints).all(axis=(1, 2))
    root_xz = np.where(ok_rows[:, None], joints[:, _PELVIS][:, [0, 2]], np.nan)
    bouts = walking_bouts(root_xz, frame_idx, fps)
    rows: list[int] = []
    sides: list[str] = []
    intervals: list[float] = []
    speed_sum = dur = 0.0
    n_rows = 0
    for a, b in bouts:
        r, s = find_steps(joints[a:b], fps)
        rows += (r + a).tolist()
        sides += s.tolist()
        # consecutive steps of opposite feet; two of the same foot in a row mean a missed step
        for k in range(1, len(r)):
            if s[k] != s[k - 1]:
                intervals.append(float(r[k] - r[k - 1]) / fps)
        # windowed velocity, not the frame-to-frame path: the path adds sway and estimation noise
        speed_sum += float(np.linalg.norm(_window_velocity(root_xz[a:b], fps), axis=1).sum())
        n_rows += b - a
        dur += (b - a) / fps
    if not intervals:
        return Gait(False, frame, walking_s=dur, n_steps=len(rows), bouts=tuple(bouts), note=note)
    step_t = float(np.mean(intervals))
    return Gait(
        walking=True,
        frame=frame,
        walking_s=dur,
        n_steps=len(rows),
        cadence_steps_min=60.0 / step_t,
        step_time_s=step_t,
        speed_m_s=speed_sum / n_rows,
        bouts=tuple(bouts),
        step_rows=tuple(rows),
        step_sides=tuple(sides),
        note=note,
    )
