"""The write stage: one video's tracks -> ``OUT/<video_id>/`` (see docs/FORMATS.md, "Pipeline outputs").

Files (all readable with plain pandas/pyarrow and numpy, no hmrflow needed):

* ``tracks.parquet`` one row per (track, frame), sorted by (track_id, frame_idx), with
  fixed-size list columns for ``pose`` (72), ``betas`` (10) and ``transl`` (3);
* ``track_<id>.npz`` one SMPL file per track with AMASS key names (72-value SMPL poses and
  10 betas, not AMASS's SMPL-H 156-value poses; ``root_orient``/``pose_body`` for body loaders);
* ``camera.npz`` the camera of every decoded frame in the world frame (when known);
* ``manifest.json`` provenance (:func:`hmrflow.pipeline.provenance.build_manifest`).

The whole folder is built in a hidden temporary sibling and renamed into place
(:func:`hmrflow.pipeline.atomic.atomic_directory`), so a crash never leaves a
complete-looking partial output.  Writing is deterministic: the same input and config give
byte-identical parquet/npz files and a manifest that differs only in its ``volatile`` key.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hmrflow.pipeline.atomic import atomic_directory, dumps_json, remove_stale_temps
from hmrflow.pipeline.config import WriteConfig
from hmrflow.pipeline.naming import safe_output_dir
from hmrflow.pipeline.provenance import build_manifest
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import N_BETAS, N_JOINTS, SMPLSequence
from hmrflow.priors.rotations import matrix_to_axis_angle

log = logging.getLogger(__name__)

TRACKS_FILE = "tracks.parquet"
MANIFEST_FILE = "manifest.json"
CAMERA_FILE = "camera.npz"
#: OpenCV camera (x right, y down, z forward) -> z-up (x right, y forward, z up).
CAMERA_TO_ZUP: np.ndarray = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=np.float64)
#: Fixed zip timestamp so that .npz bytes do not depend on when they were written.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

#: Arrow schema of ``tracks.parquet`` (docs/FORMATS.md).
TRACKS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int64(), nullable=False),
        pa.field("frame_idx", pa.int64(), nullable=False),
        pa.field("pts_s", pa.float64(), nullable=False),
        pa.field("pose", pa.list_(pa.field("item", pa.float32(), nullable=False), N_JOINTS * 3), nullable=False),
        pa.field("betas", pa.list_(pa.field("item", pa.float32(), nullable=False), N_BETAS), nullable=False),
        pa.field("transl", pa.list_(pa.field("item", pa.float32(), nullable=False), 3), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("observed", pa.bool_(), nullable=False),
        pa.field("world_global_orient", pa.list_(pa.field("item", pa.float32(), nullable=False), 3), nullable=False),
        pa.field("world_transl", pa.list_(pa.field("item", pa.float32(), nullable=False), 3), nullable=False),
    ]
)


def track_file_name(track_id: int) -> str:
    """``track_<id>.npz``."""
    return f"track_{int(track_id)}.npz"


def rotmats_to_poses(rotmats: np.ndarray) -> np.ndarray:
    """(T, 24, 3, 3) rotation matrices -> (T, 72) float32 axis-angle (fp32 conversion)."""
    rot = torch.from_numpy(np.ascontiguousarray(rotmats, dtype=np.float32))
    with torch.no_grad():
        aa = matrix_to_axis_angle(rot)  # (T, 24, 3)
    return aa.reshape(rot.shape[0], N_JOINTS * 3).numpy().astype(np.float32, copy=False)


def mocap_framerate(pts: np.ndarray, fallback_fps: float) -> float:
    """Median of ``1 / diff(pts)`` over positive steps; ``fallback_fps`` when T < 2 (or no valid step)."""
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape[0] >= 2:
        steps = np.diff(pts)
        steps = steps[np.isfinite(steps) & (steps > 0)]
        if steps.size:
            return float(np.median(1.0 / steps))
    return float(fallback_fps)


def write_npz_deterministic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-reproducible (fixed zip timestamps, given key order).

    The result is a normal ``.npz``: ``np.load(path)`` reads it without ``allow_pickle``.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            arr = np.asanyarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"{name!r}: object arrays cannot be stored without pickle")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)


#: ``surface_model_type`` of every track npz: the poses are SMPL's 24 joints, not SMPL-H's 52.
SURFACE_MODEL_TYPE = "smpl"
#: Values of the body joints 1-21 in a pose, the part SMPL and SMPL-H share (AMASS's ``pose_body``).
POSE_BODY_VALUES = 63


def _track_arrays(seq: SMPLSequence, poses: np.ndarray, gender: str, fallback_fps: float) -> dict[str, np.ndarray]:
    """The content of ``track_<id>.npz``: SMPL parameters under AMASS's key names (key order fixed).

    ``poses`` is SMPL's (T, 72).  AMASS's own files hold SMPL-H (T, 156) poses, whose values
    66-156 are finger joints where SMPL has its two hand joints (66-72), so a loader that
    slices hands out of ``poses`` gets the wrong thing; ``root_orient`` (T, 3) and
    ``pose_body`` (T, 63), the keys AMASS-style body loaders read (joints 0 and 1-21, the
    same in both models), and ``surface_model_type`` say exactly what is there.  A track that
    keeps the estimator's mesh (FastMETRO head, ``estimate.vertices``) adds ``vertices``
    (T, V, 3) float16: metres relative to the pelvis joint, camera axes, NaN on filled rows.
    """
    arrays = {
        "poses": poses,
        "root_orient": np.ascontiguousarray(poses[:, :3]),
        "pose_body": np.ascontiguousarray(poses[:, 3 : 3 + POSE_BODY_VALUES]),
        "surface_model_type": np.array(SURFACE_MODEL_TYPE),
        "trans": np.asarray(seq.transl, dtype=np.float32),
        "betas": np.asarray(seq.betas, dtype=np.float32),
        "gender": np.array(gender),
        "mocap_framerate": np.array(mocap_framerate(seq.pts, fallback_fps), dtype=np.float64),
        "frame_idx": np.asarray(seq.frame_idx, dtype=np.int64),
        "pts": np.asarray(seq.pts, dtype=np.float64),
        "observed": np.asarray(seq.observed, dtype=bool),
        "confidence": np.asarray(seq.confidence, dtype=np.float32),
        "frame": np.array("opencv_camera"),
        "camera_to_zup": CAMERA_TO_ZUP.copy(),
        "world_global_orient": world_orient(seq),
        "world_trans": np.asarray(seq.world_transl, dtype=np.float32),
    }
    if np.asarray(seq.vertices).shape[1] > 0:
        arrays["vertices"] = np.asarray(seq.vertices, dtype=np.float16)
    return arrays


def world_orient(seq: SMPLSequence) -> np.ndarray:
    """(T, 3) float32 axis-angle of the world-frame global orientation (NaN where unknown)."""
    rot = np.asarray(seq.world_rotmat, np.float32)
    known = np.isfinite(rot).all(axis=(1, 2))
    out = np.full((len(rot), 3), np.nan, np.float32)
    if known.any():
        with torch.no_grad():
            out[known] = matrix_to_axis_angle(torch.from_numpy(np.ascontiguousarray(rot[known]))).numpy()
    return out


def _fixed_list(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def tracks_table(video_id: str, sequences: list[SMPLSequence], poses: list[np.ndarray]) -> pa.Table:
    """The ``tracks.parquet`` table (rows of every track, in the given order); empty when no tracks."""
    n = sum(len(s) for s in sequences)
    if sequences:
        track_id = np.concatenate([np.full(len(s), int(s.track_id), np.int64) for s in sequences])
        frame_idx = np.concatenate([np.asarray(s.frame_idx, np.int64) for s in sequences])
        pts = np.concatenate([np.asarray(s.pts, np.float64) for s in sequences])
        pose = np.concatenate(poses).reshape(n, N_JOINTS * 3)
        betas = np.concatenate([np.broadcast_to(np.asarray(s.betas, np.float32), (len(s), N_BETAS)) for s in sequences])
        transl = np.concatenate([np.asarray(s.transl, np.float32).reshape(len(s), 3) for s in sequences])
        conf = np.concatenate([np.asarray(s.confidence, np.float32) for s in sequences])
        observed = np.concatenate([np.asarray(s.observed, bool) for s in sequences])
        w_orient = np.concatenate([world_orient(s) for s in sequences])
        w_transl = np.concatenate([np.asarray(s.world_transl, np.float32).reshape(len(s), 3) for s in sequences])
    else:
        track_id = frame_idx = np.zeros(0, np.int64)
        pts = np.zeros(0, np.float64)
        pose = np.zeros((0, N_JOINTS * 3), np.float32)
        betas = np.zeros((0, N_BETAS), np.float32)
        transl = np.zeros((0, 3), np.float32)
        conf = np.zeros(0, np.float32)
        observed = np.zeros(0, bool)
        w_orient = w_transl = np.zeros((0, 3), np.float32)
    columns = [
        pa.array([video_id] * n, type=pa.string()),
        pa.array(track_id, type=pa.int64()),
        pa.array(frame_idx, type=pa.int64()),
        pa.array(pts, type=pa.float64()),
        _fixed_list(pose, N_JOINTS * 3),
        _fixed_list(betas, N_BETAS),
        _fixed_list(transl, 3),
        pa.array(conf, type=pa.float32()),
        pa.array(observed, type=pa.bool_()),
        _fixed_list(w_orient, 3),
        _fixed_list(w_transl, 3),
    ]
    return pa.Table.from_arrays(columns, schema=TRACKS_SCHEMA)


def _gender(config: Mapping[str, Any]) -> str:
    body = config.get("body_model")
    if isinstance(body, Mapping) and isinstance(body.get("gender"), str):
        return body["gender"]
    return "neutral"


class WriteStage(BaseStage[VideoResult, Path]):
    """``VideoResult -> OUT/<video_id>/`` (tracks.parquet, track_<id>.npz, manifest.json).

    cfg: :class:`WriteConfig` (``parquet`` / ``npz`` switch those files; the manifest is
    always written).  out_root: the output root; ``video_id`` must already be a safe id
    (:func:`hmrflow.pipeline.naming.assign_video_ids`), anything else raises
    :class:`~hmrflow.pipeline.errors.UnsafeFileError`.
    ``models``: name -> weights path (or sha256) recorded in every manifest, merged with
    ``result.extra["models"]``; ``notes``: plain-word caveats recorded in every manifest
    (``notes``).  An existing output folder of the same video is replaced
    atomically.  Holds no state between calls (input hashes are memoised process-wide by
    (path, size, mtime)).
    """

    resources: ClassVar[Resources] = Resources(cpus=1.0)
    #: Leftover temporaries of killed writers older than this are removed before writing.
    STALE_TEMP_S: ClassVar[float] = 3600.0

    def __init__(
        self,
        cfg: WriteConfig,
        out_root: str | os.PathLike[str],
        models: Mapping[str, str] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_root = Path(out_root)
        self.models = dict(models or {})
        self.notes = list(notes)

    def __call__(self, result: VideoResult) -> Path:
        video_id = result.clip.video_id
        self.out_root.mkdir(parents=True, exist_ok=True)
        out_dir = safe_output_dir(self.out_root, video_id)
        sequences = self._checked_sequences(result)
        poses = [rotmats_to_poses(s.rotmats) for s in sequences]
        gender = _gender(result.config)
        remove_stale_temps(out_dir.parent, name=video_id, older_than_s=self.STALE_TEMP_S)
        with atomic_directory(out_dir) as tmp:
            files: dict[str, Path] = {}
            if self.cfg.parquet:
                table = tracks_table(video_id, sequences, poses)
                files[TRACKS_FILE] = tmp / TRACKS_FILE
                pq.write_table(table, files[TRACKS_FILE], compression="zstd")
            if self.cfg.npz:
                for seq, pose in zip(sequences, poses):
                    name = track_file_name(seq.track_id)
                    files[name] = tmp / name
                    write_npz_deterministic(files[name], _track_arrays(seq, pose, gender, result.clip.fps))
            if result.cameras is not None:
                files[CAMERA_FILE] = tmp / CAMERA_FILE
                write_npz_deterministic(files[CAMERA_FILE], result.cameras.arrays())
            manifest = build_manifest(result, files, self.models, self.notes)
            (tmp / MANIFEST_FILE).write_text(dumps_json(manifest), encoding="utf-8")
        log.info(
            "%s: wrote %d tracks (%d rows) to %s", video_id, len(sequences), sum(len(s) for s in sequences), out_dir
        )
        return out_dir

    @staticmethod
    def _checked_sequences(result: VideoResult) -> list[SMPLSequence]:
        """Sequences sorted by track id; refuses other videos' tracks and duplicate ids."""
        vid = result.clip.video_id
        seen: set[int] = set()
        for s in result.sequences:
            if s.video_id != vid:
                raise ValueError(f"{vid}: got a track of another video ({s.video_id!r}, track {s.track_id})")
            if int(s.track_id) in seen:
                raise ValueError(f"{vid}: track id {s.track_id} appears twice")
            seen.add(int(s.track_id))
            if s.rotmats.shape[1:] != (N_JOINTS, 3, 3):
                raise ValueError(
                    f"{vid}: track {s.track_id} rotmats have shape {s.rotmats.shape}, expected (T, 24, 3, 3)"
                )
            if np.asarray(s.transl).shape[1:] != (3,):
                raise ValueError(
                    f"{vid}: track {s.track_id} transl has shape {np.asarray(s.transl).shape}, expected (T, 3)"
                )
        return sorted(result.sequences, key=lambda s: int(s.track_id))
