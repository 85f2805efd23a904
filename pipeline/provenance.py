"""Provenance: what produced an output (input hash, config, versions, models, seeds, host).

:func:`build_manifest` assembles the ``manifest.json`` written beside every output (see
``docs/FORMATS.md``, "Pipeline outputs").  Everything in it is a deterministic function of
the input, the config, the installed packages and the models, *except* the
``"volatile"`` key (timings, wall-clock timestamp, host), so two runs of the same input and
config give manifests that are equal once ``"volatile"`` is dropped.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import socket
import sys
import threading
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hmrflow.pipeline.results import VideoResult

log = logging.getLogger(__name__)

#: Manifest layout version; bump when keys change meaning.
MANIFEST_VERSION = 1
#: The ``format`` of every manifest hmrflow writes (how an output folder is recognised).
MANIFEST_FORMAT = "hmrflow.output"
#: Key holding everything that legitimately differs between two identical runs.
VOLATILE_KEY = "volatile"
#: Distributions whose versions are recorded (those installed).
TRACKED_PACKAGES: tuple[str, ...] = (
    "hmrflow",
    "torch",
    "numpy",
    "smplx",
    "diffusers",
    "av",
    "decord",
    "ray",
    "pandas",
    "pyarrow",
)
_SHA256_RE = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


# ------------------------------------------------------------------------- hashing
def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class _HashCache:
    """sha256 per (absolute path, size, mtime_ns), so an input is hashed once per run."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._data: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self.misses = 0

    def get(self, path: str | os.PathLike[str]) -> str:
        full = os.path.abspath(os.fspath(path))
        st = os.stat(full)
        key = (full, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        digest = file_sha256(full)
        with self._lock:
            self.misses += 1
            self._data[key] = digest
            while len(self._data) > self._max:
                self._data.popitem(last=False)
        return digest

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.misses = 0


#: Process-wide cache used by :func:`cached_file_sha256` (a pure memo; no results depend on it).
HASH_CACHE = _HashCache()


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256`, memoised on (path, size, mtime): re-hashes only changed files."""
    return HASH_CACHE.get(path)


def tree_sha256(directory: str | os.PathLike[str]) -> str:
    """sha256 over a folder's files (relative POSIX path + file hash, sorted): one id for a model dir."""
    root = Path(directory)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(cached_file_sha256(p).encode("ascii") + b"\n")
    return h.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of canonical JSON; equals ``PipelineConfig.config_hash()``."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------- environment
def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (missing ones omitted) plus ``python``; imports nothing.

    Memoised per process (reading package metadata costs about 1 ms per package).
    """
    return dict(_package_versions(tuple(names)))


@functools.lru_cache(maxsize=8)
def _package_versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def worker_info() -> dict[str, Any]:
    """This process: host name, pid and the GPUs it may see (``CUDA_VISIBLE_DEVICES``, which Ray
    sets to the GPUs it assigned; None when unset)."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def host_info() -> dict[str, Any]:
    """Where the run happened: host name, OS, CPU count and (if torch is loaded) the GPU."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python_implementation": platform.python_implementation(),
    }
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["cuda"] = torch.version.cuda
                info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception as exc:  # a broken driver must not break writing outputs
            log.debug("could not query CUDA devices: %s", exc)
    return info


# ------------------------------------------------------------------------- helpers
def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy/Path/tuple/set values into plain JSON types (NaN/inf -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def model_entry(value: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe one model: a file/folder path (hashed) or a given sha256 string."""
    text = os.fspath(value)
    match = _SHA256_RE.fullmatch(text)
    if match and not os.path.exists(text):
        return {"sha256": match.group(1).lower()}
    p = Path(text)
    if p.is_file():
        return {"path": str(p.resolve()), "sha256": cached_file_sha256(p), "size_bytes": p.stat().st_size}
    if p.is_dir():
        return {"path": str(p.resolve()), "sha256": tree_sha256(p), "kind": "directory"}
    # a name or version string (e.g. "bundled-tiny-v1"): recorded as given
    return {"id": text}


def _input_entry(result: VideoResult) -> dict[str, Any]:
    clip = result.clip
    entry: dict[str, Any] = {
        "path": os.path.abspath(clip.path) if clip.path else "",
        "video_id": clip.video_id,
        "fps": clip.fps,
        "n_frames": clip.n_frames,
        "rotation": clip.rotation,
        "width": clip.width,
        "height": clip.height,
        "duration_s": clip.duration_s,
        "size_bytes": None,
        "sha256": result.extra.get("input_sha256"),
    }
    try:
        entry["size_bytes"] = os.stat(clip.path).st_size
        if entry["sha256"] is None:
            entry["sha256"] = cached_file_sha256(clip.path)
    except OSError as exc:
        log.warning("%s: cannot hash the input for the manifest (%s)", clip.path, exc)
    return entry


def _counts(result: VideoResult) -> dict[str, int]:
    seqs = result.sequences
    frames = set()
    for s in seqs:
        frames.update(np.asarray(s.frame_idx).tolist())
    observed = int(sum(int(np.count_nonzero(s.observed)) for s in seqs))
    rows = int(sum(len(s) for s in seqs))
    return {
        "tracks": len(seqs),
        "rows": rows,
        "frames_with_tracks": len(frames),
        "frames_decoded": int(result.extra.get("n_frames_decoded", result.clip.n_frames)),
        "observed": observed,
        "filled": rows - observed,
    }


def _seeds(result: VideoResult) -> dict[str, Any]:
    seeds: dict[str, Any] = {}
    if "seed" in result.config:
        seeds["seed"] = result.config["seed"]
    extra = result.extra.get("seeds")
    if isinstance(extra, Mapping):
        seeds.update(extra)
    elif extra is not None:
        seeds["extra"] = extra
    return seeds


#: ``VideoResult.extra`` keys that build_manifest interprets (the rest go to "extra").
_KNOWN_EXTRA = ("models", "seeds", "input_sha256", "n_frames_decoded", "camera")


def tracklet_record(seq: Any) -> dict[str, Any]:
    """How a track was assembled: ``tracklets`` (the online tracklets it is made of, in time
    order: id, first/last frame and time) and ``joins`` (each place stitching joined two of
    them: the tracklets, the last frame before and the first frame after the gap, the gap in s)."""
    tl = np.asarray(seq.tracklet, np.int64)
    obs = np.flatnonzero(tl >= 0)
    tracklets: list[dict[str, Any]] = []
    joins: list[dict[str, Any]] = []
    for i in obs:
        k = int(tl[i])
        if tracklets and tracklets[-1]["tracklet"] == k:
            tracklets[-1].update(last_frame=int(seq.frame_idx[i]), last_pts_s=float(seq.pts[i]))
            continue
        if tracklets:
            prev = tracklets[-1]
            joins.append(
                {
                    "from_tracklet": prev["tracklet"],
                    "to_tracklet": k,
                    "last_frame_before": prev["last_frame"],
                    "first_frame_after": int(seq.frame_idx[i]),
                    "gap_s": round(float(seq.pts[i]) - prev["last_pts_s"], 6),
                }
            )
        tracklets.append(
            {
                "tracklet": k,
                "first_frame": int(seq.frame_idx[i]),
                "last_frame": int(seq.frame_idx[i]),
                "first_pts_s": float(seq.pts[i]),
                "last_pts_s": float(seq.pts[i]),
            }
        )
    return {"tracklets": tracklets, "joins": joins}


def build_manifest(
    result: VideoResult,
    files: Mapping[str, str | os.PathLike[str]],
    models: Mapping[str, str | os.PathLike[str]] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``manifest.json`` content of one video's output (JSON-serialisable dict).

    files: output file name -> path of the written file (hashed; recorded by name only).
    models: model name -> weights file/folder (hashed) or a sha256 / id string; merged over
        ``result.extra["models"]``.
    notes: what a reader of the output must know about how it was made (e.g. a detector meant
        for synthetic clips), in plain words.
    Keys: ``format``, ``format_version``, ``video_id``, ``notes``, ``input`` (path, size, sha256 and
    clip facts), ``config``, ``config_hash``, ``versions``, ``models``, ``seeds``, ``camera`` (the
    pinhole camera of the camera-frame outputs: focal_px, cx, cy, width, height; null when
    nobody was found),
    ``counts`` (tracks, rows, frames, observed/filled), ``tracks`` (per track summary),
    ``files`` (sha256 and size per output file), ``extra`` (other provenance passed by the
    runner), and ``volatile`` = {``timings_s``, ``written_at``, ``host``}: the only part
    allowed to differ between two runs of the same input and config.
    """
    all_models: dict[str, Any] = {}
    extra_models = result.extra.get("models")
    if isinstance(extra_models, Mapping):
        all_models.update(extra_models)
    all_models.update(models or {})
    tracks = []
    for s in sorted(result.sequences, key=lambda s: int(s.track_id)):
        n_obs = int(np.count_nonzero(s.observed))
        tracks.append(
            {
                "track_id": int(s.track_id),
                "n_frames": len(s),
                "observed": n_obs,
                "filled": len(s) - n_obs,
                "first_frame": int(s.frame_idx[0]) if len(s) else None,
                "last_frame": int(s.frame_idx[-1]) if len(s) else None,
                "first_pts_s": float(s.pts[0]) if len(s) else None,
                "last_pts_s": float(s.pts[-1]) if len(s) else None,
                **tracklet_record(s),
            }
        )
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "video_id": result.clip.video_id,
        "notes": list(notes),
        "input": _input_entry(result),
        "config": to_jsonable(result.config),
        "config_hash": config_hash(result.config),
        "versions": package_versions(),
        "models": {name: model_entry(v) for name, v in sorted(all_models.items())},
        "seeds": _seeds(result),
        "camera": to_jsonable(result.extra.get("camera")),
        "counts": _counts(result),
        "tracks": tracks,
        "files": {
            name: {"sha256": file_sha256(p), "size_bytes": os.stat(p).st_size} for name, p in sorted(files.items())
        },
        "extra": {k: v for k, v in result.extra.items() if k not in _KNOWN_EXTRA},
        VOLATILE_KEY: {
            "timings_s": dict(result.timings_s),
            "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": host_info(),
            **{k: v for k, v in result.volatile.items() if k not in ("timings_s", "written_at", "host")},
        },
    }
    return to_jsonable(manifest)


def stable_part(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest without its ``volatile`` key (what must match between identical runs)."""
    return {k: v for k, v in manifest.items() if k != VOLATILE_KEY}
