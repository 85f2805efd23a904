"""Load one pipeline output folder ``OUT/<video_id>/`` (docs/FORMATS.md, "Pipeline outputs").

Reads ``tracks.parquet`` (preferred; every track in one file) or, when it is absent, the
``track_<id>.npz`` files, plus ``manifest.json``.  Needs only numpy/pyarrow; no torch.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)

TRACKS_FILE = "tracks.parquet"
MANIFEST_FILE = "manifest.json"
_NPZ_RE = re.compile(r"^track_(-?\d+)\.npz$")


class OutputReadError(HmrflowError, ValueError):
    """An output folder is missing files or holds malformed ones."""


@dataclass(frozen=True, eq=False)
class TrackData:
    """One track of one video, as written by the write stage.

    frame_idx: (T,) int64 video frame indices (strictly increasing).
    pts: (T,) float64 seconds.
    poses: (T, 72) float32 axis-angle, camera frame (joint 0 = global orientation).
    transl: (T, 3) float32 metres, camera frame.
    betas: (10,) float32.
    observed: (T,) bool (False = filled by refinement).
    confidence: (T,) float32.
    world_orient, world_transl: (T, 3) float32 global orientation (axis-angle) and translation
    in the video's world frame (y up, docs/world.md); None for outputs without them.
    """

    track_id: int
    frame_idx: np.ndarray
    pts: np.ndarray
    poses: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    observed: np.ndarray
    confidence: np.ndarray
    gender: str = "neutral"
    world_orient: np.ndarray | None = None
    world_transl: np.ndarray | None = None

    @property
    def has_world(self) -> bool:
        """True when every row has a world-frame root."""
        return (
            self.world_orient is not None
            and self.world_transl is not None
            and bool(np.isfinite(self.world_orient).all() and np.isfinite(self.world_transl).all())
        )

    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])

    @property
    def frame_rate(self) -> float:
        """Median of ``1 / diff(pts)`` (the npz's ``mocap_framerate``); 30 when T < 2."""
        steps = np.diff(self.pts)
        steps = steps[np.isfinite(steps) & (steps > 0)]
        return float(np.median(1.0 / steps)) if steps.size else 30.0

    def rotmats(self) -> np.ndarray:
        """(T, 24, 3, 3) float64 rotation matrices of ``poses`` (scipy Rodrigues)."""
        from scipy.spatial.transform import Rotation

        aa = np.asarray(self.poses, np.float64).reshape(-1, 3)
        return Rotation.from_rotvec(aa).as_matrix().reshape(len(self), 24, 3, 3)


@dataclass(frozen=True, eq=False)
class VideoOutput:
    """One output folder: its tracks (sorted by id) and manifest (``{}`` when absent)."""

    video_id: str
    path: Path
    tracks: list[TrackData]
    manifest: dict[str, Any] = field(default_factory=dict)

    def track(self, track_id: int) -> TrackData:
        for t in self.tracks:
            if t.track_id == int(track_id):
                return t
        raise KeyError(f"{self.path}: no track {track_id}")

    @property
    def input_path(self) -> str | None:
        """The input video path recorded in the manifest, if any."""
        inp = self.manifest.get("input")
        if isinstance(inp, dict) and isinstance(inp.get("path"), str):
            return inp["path"]
        return None


def is_video_output(path: Path) -> bool:
    """True when ``path`` looks like ``OUT/<video_id>/`` (has tracks.parquet, npz or manifest)."""
    return path.is_dir() and (
        (path / TRACKS_FILE).is_file()
        or (path / MANIFEST_FILE).is_file()
        or any(_NPZ_RE.match(p.name) for p in path.iterdir())
    )


def find_video_outputs(path: str | Path) -> list[Path]:
    """``path`` itself when it is one video's folder, else its video sub-folders (sorted).

    Raises:
        OutputReadError: nothing that looks like an output folder.
    """
    p = Path(path)
    if not p.is_dir():
        raise OutputReadError(f"{p}: not a folder (give OUT_DIR or OUT_DIR/<video_id>)")
    if is_video_output(p):
        return [p]
    found = sorted(c for c in p.iterdir() if not c.name.startswith(".") and is_video_output(c))
    if not found:
        raise OutputReadError(f"{p}: no hmrflow outputs here (expected {TRACKS_FILE} or track_<id>.npz)")
    return found


def _fixed(col: Any, width: int, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if not pa.types.is_fixed_size_list(arr.type) and not pa.types.is_list(arr.type):
        raise OutputReadError(f"{path}: column {name!r} is {arr.type}, expected a list of {width}")
    flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), np.float32)
    if flat.size != len(arr) * width:
        raise OutputReadError(f"{path}: column {name!r} rows do not all have {width} values")
    return flat.reshape(len(arr), width)


def _tracks_from_parquet(path: Path) -> list[TrackData]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise OutputReadError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    need = ["track_id", "frame_idx", "pts_s", "pose", "betas", "transl", "confidence", "observed"]
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise OutputReadError(f"{path}: missing columns {missing}")
    tid = table.column("track_id").to_numpy().astype(np.int64)
    fidx = table.column("frame_idx").to_numpy().astype(np.int64)
    pts = table.column("pts_s").to_numpy().astype(np.float64)
    pose = _fixed(table.column("pose"), 72, "pose", path)
    betas = _fixed(table.column("betas"), 10, "betas", path)
    transl = _fixed(table.column("transl"), 3, "transl", path)
    conf = table.column("confidence").to_numpy().astype(np.float32)
    obs = table.column("observed").to_numpy(zero_copy_only=False).astype(bool)
    w_or = w_tr = None
    if "world_global_orient" in table.column_names and "world_transl" in table.column_names:
        w_or = _fixed(table.column("world_global_orient"), 3, "world_global_orient", path)
        w_tr = _fixed(table.column("world_transl"), 3, "world_transl", path)
    out = []
    for t in np.unique(tid):
        rows = np.nonzero(tid == t)[0]
        rows = rows[np.argsort(fidx[rows], kind="stable")]
        out.append(
            TrackData(
                track_id=int(t),
                frame_idx=fidx[rows],
                pts=pts[rows],
                poses=pose[rows],
                transl=transl[rows],
                betas=betas[rows[0]].copy(),
                observed=obs[rows],
                confidence=conf[rows],
                world_orient=None if w_or is None else w_or[rows],
                world_transl=None if w_tr is None else w_tr[rows],
            )
        )
    return out


def _track_from_npz(path: Path, track_id: int) -> TrackData:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:
        raise OutputReadError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    for key in ("poses", "trans", "betas", "frame_idx", "pts"):
        if key not in d:
            raise OutputReadError(f"{path}: missing key {key!r}")
    t = len(d["frame_idx"])
    return TrackData(
        track_id=track_id,
        frame_idx=d["frame_idx"].astype(np.int64),
        pts=d["pts"].astype(np.float64),
        poses=d["poses"].astype(np.float32).reshape(t, 72),
        transl=d["trans"].astype(np.float32).reshape(t, 3),
        betas=d["betas"].astype(np.float32).reshape(-1)[:10],
        observed=d.get("observed", np.ones(t, bool)).astype(bool),
        confidence=d.get("confidence", np.ones(t, np.float32)).astype(np.float32),
        gender=str(d["gender"]) if "gender" in d else "neutral",
        world_orient=d["world_global_orient"].astype(np.float32).reshape(t, 3) if "world_global_orient" in d else None,
        world_transl=d["world_trans"].astype(np.float32).reshape(t, 3) if "world_trans" in d else None,
    )


def load_video_output(path: str | Path) -> VideoOutput:
    """Read ``OUT/<video_id>/``: tracks (parquet, else npz files) and manifest.

    Raises:
        OutputReadError: no tracks file, or a malformed one.
    """
    p = Path(path)
    manifest: dict[str, Any] = {}
    if (p / MANIFEST_FILE).is_file():
        try:
            manifest = json.loads((p / MANIFEST_FILE).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise OutputReadError(f"{p / MANIFEST_FILE}: not valid JSON ({exc})") from None
    if (p / TRACKS_FILE).is_file():
        tracks = _tracks_from_parquet(p / TRACKS_FILE)
        genders = {}
        for f in p.glob("track_*.npz"):
            m = _NPZ_RE.match(f.name)
            if m:
                try:
                    with np.load(f, allow_pickle=False) as z:
                        genders[int(m.group(1))] = str(z["gender"]) if "gender" in z.files else "neutral"
                except Exception:  # the parquet is authoritative; a bad npz only loses the gender
                    log.warning("%s: unreadable, gender taken as neutral", f)
        tracks = [TrackData(**{**t.__dict__, "gender": genders.get(t.track_id, "neutral")}) for t in tracks]
    else:
        files = sorted((int(m.group(1)), f) for f in p.glob("track_*.npz") if (m := _NPZ_RE.match(f.name)))
        if not files and not manifest:
            raise OutputReadError(f"{p}: no {TRACKS_FILE}, track_<id>.npz or {MANIFEST_FILE}")
        tracks = [_track_from_npz(f, tid) for tid, f in files]
    video_id = str(manifest.get("video_id") or p.name)
    return VideoOutput(video_id=video_id, path=p, tracks=sorted(tracks, key=lambda t: t.track_id), manifest=manifest)
