"""Exports of pipeline outputs to biomechanics and animation formats.

``export_video(video_dir, fmt, dest)`` writes one file per track,
``<dest>/<video_id>_track<id>.<ext>``:

* ``trc``: OpenSim markers (SMPL joints, optionally surface markers), Y-up, mm;
* ``mot`` / ``csv``: anatomical joint angles in degrees (:mod:`.angles`);
* ``bvh``: SMPL skeleton animation (cm, Y-up, ZXY channels);
* ``c3d``: markers through ezc3d (mm, Y-up);
* ``opensim``: a folder per track with virtual skin markers, an OpenSim model scaled by
  OpenSim's ScaleTool and OpenSim's inverse kinematics (:mod:`.opensim`, docs/opensim.md).

Units, axes, frame rate and timestamps: docs/exports.md.  ``frame="world"`` (the default)
exports the video's gravity-aligned world frame (docs/world.md); ``frame="camera"`` the
first-person camera frame turned upright, as before.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hmrflow.jobs.export.reading import TrackData, VideoOutput, find_video_outputs, load_video_output

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("trc", "mot", "csv", "bvh", "c3d", "opensim")
ExportFormat = Literal["trc", "mot", "csv", "bvh", "c3d", "opensim"]
ExportFrame = Literal["world", "camera"]
#: The exporters turn OpenCV camera data upright with this rotation (x right, y up, z back).
_C = np.diag([1.0, -1.0, -1.0])

__all__ = [
    "FORMATS",
    "export_track",
    "export_video",
    "find_video_outputs",
    "load_video_output",
    "TrackData",
    "VideoOutput",
]


def world_as_camera(track: TrackData, root_joint: np.ndarray) -> TrackData:
    """The track's world-frame root expressed so that the exporters' camera-to-upright turn
    (``diag(1, -1, -1)``, its own inverse) gives back the world frame exactly.

    root_joint: (3,) the shaped body's rest-pose root joint J0 (SMPL rotates about it, so a
    rigid motion ``x -> A x`` changes a translation to ``A (J0 + t) - J0``).
    """
    from scipy.spatial.transform import Rotation

    assert track.world_orient is not None and track.world_transl is not None
    poses = np.array(track.poses, np.float32, copy=True)
    rw = Rotation.from_rotvec(np.asarray(track.world_orient, np.float64)).as_matrix()
    poses[:, :3] = Rotation.from_matrix(_C @ rw).as_rotvec().astype(np.float32)
    transl = (np.asarray(track.world_transl, np.float64) + root_joint) @ _C.T - root_joint
    return dataclasses.replace(track, poses=poses, transl=transl.astype(np.float32))


def export_track(
    track: TrackData,
    video_id: str,
    fmt: str,
    dest: Path,
    body_model: Any = None,
    markers: str = "joints",
    units: str = "mm",
    frame: str = "world",
) -> Path:
    """Write one track in ``fmt`` to ``dest/<video_id>_track<id>.<fmt>``; returns the path.

    ``body_model`` (a :class:`~hmrflow.priors.body_model.BodyModel`) is needed for trc, bvh
    and c3d (joint positions / rest offsets); angles need none.  ``frame``: ``world`` (y up,
    the video's world frame; a track without one is exported in the camera frame with a
    warning) or ``camera``.
    """
    from hmrflow.jobs.export import angles as ang
    from hmrflow.jobs.export import positions

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    if frame not in ("world", "camera"):
        raise ValueError(f"unknown export frame {frame!r}: world or camera")
    if fmt == "opensim":
        raise ValueError("format 'opensim' writes a folder per track: use export_video or export_opensim")
    if frame == "world":
        if not track.has_world:
            log.warning(
                "%s track %d: no world frame in the output; exporting the camera frame", video_id, track.track_id
            )
        else:
            j0 = np.zeros(3)
            if body_model is not None:
                j0 = positions.rest_joints(track, body_model)[0]
            track = world_as_camera(track, j0)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{video_id}_track{track.track_id}.{fmt}"
    if fmt in ("mot", "csv"):
        from hmrflow.jobs.export.mot import write_angles_csv, write_mot

        a = ang.joint_angles(track.rotmats())
        if fmt == "mot":
            return write_mot(path, track.pts, a, name=f"{video_id} track {track.track_id} joint angles")
        return write_angles_csv(path, track.pts, track.frame_idx, track.observed, a)
    if body_model is None:
        raise ValueError(f"format {fmt!r} needs a body model")
    if fmt == "bvh":
        from hmrflow.jobs.export.bvh import write_bvh

        return write_bvh(
            path, track.rotmats(), track.transl, positions.rest_joints(track, body_model), track.frame_rate
        )
    names = positions.marker_names(markers)  # type: ignore[arg-type]
    pos = positions.track_positions(track, body_model, markers)  # type: ignore[arg-type]
    if fmt == "trc":
        from hmrflow.jobs.export.trc import write_trc

        return write_trc(path, names, pos, track.frame_idx, track.pts, track.frame_rate, units=units)  # type: ignore[arg-type]
    from hmrflow.jobs.export.c3d import write_c3d

    return write_c3d(path, names, pos, track.frame_rate, first_frame=int(track.frame_idx[0]) if len(track) else 0)


def export_video(
    video_dir: str | Path,
    fmt: str,
    dest: str | Path | None = None,
    body_model: Any = None,
    markers: str = "joints",
    units: str = "mm",
    frame: str = "world",
    opensim_model: str = "scaled",
) -> list[Path]:
    """Export every track of ``OUT/<video_id>/``; ``dest`` defaults to ``<video_dir>/exports``.

    ``opensim_model`` (format ``opensim`` only): ``scaled`` or ``shape`` (docs/opensim.md)."""
    out = load_video_output(video_dir)
    folder = Path(dest) if dest is not None else out.path / "exports"
    written: list[Path] = []
    for t in out.tracks:
        if len(t) == 0:
            continue
        if fmt == "opensim":
            from hmrflow.jobs.export.opensim import export_opensim

            if body_model is None:
                raise ValueError("format 'opensim' needs a body model")
            if frame == "camera" and t.has_world:
                t = dataclasses.replace(t, world_orient=None, world_transl=None)
            written.extend(export_opensim(t, out.video_id, folder, body_model, model=opensim_model))
            continue
        written.append(export_track(t, out.video_id, fmt, folder, body_model, markers, units, frame))
    log.info("%s: wrote %d %s file(s) to %s", out.video_id, len(written), fmt, folder)
    return written
