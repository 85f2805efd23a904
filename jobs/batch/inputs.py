"""Which videos a batch job processes: ``INPUT`` as a folder, a glob, a manifest or one file.

* a **folder**: every file below it (recursively) whose extension is a video extension
  (:data:`VIDEO_EXTENSIONS`, case-insensitive); hidden files and folders (``.name``,
  e.g. macOS ``._clip.mp4``) are skipped;
* a **glob** (``*``, ``?`` or ``[`` in it; ``**`` recurses): the matching files, whatever
  their extension;
* a **CSV or Parquet manifest** (``.csv``, ``.parquet``, ``.pq``) with a ``path`` column
  (relative paths are relative to the manifest's folder), optionally a ``video_id`` column,
  optionally ``start``/``end`` columns (a per-video time window: seconds ``12.5``/``12.5s`` or
  frame numbers ``300f``, see :mod:`hmrflow.pipeline.window`; an empty cell takes the job's
  ``--start``/``--end``), and any other columns: per-video metadata carried into the outputs'
  manifests;
* a single **video file**.

Every input gets a safe, unique ``video_id`` (:func:`hmrflow.pipeline.naming.assign_video_ids`),
never one of :data:`RESERVED_IDS` (names the job itself uses in the output folder).
Files listed in a manifest that do not exist are kept: the batch job records them as
failed with the reason, rather than silently processing fewer videos.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional

from hmrflow.pipeline.errors import ConfigError, HmrflowError
from hmrflow.pipeline.naming import assign_video_ids, is_safe_video_id, short_hash
from hmrflow.pipeline.window import TimePointError, Window, canonical, window_of

log = logging.getLogger(__name__)

#: Extensions (lower case, with dot) picked up when INPUT is a folder.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".mxf",
)
#: Manifest suffixes.
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")
#: Folder/file names inside OUT that belong to the job (ledger, lock, reports).
JOB_DIR = "_job"
RESERVED_IDS: frozenset[str] = frozenset({JOB_DIR})
_GLOB_CHARS = set("*?[")


class InputError(HmrflowError):
    """INPUT cannot be read or names no videos (the message says which and why)."""


#: Manifest columns holding a per-video time window (not carried as metadata).
WINDOW_COLUMNS: tuple[str, ...] = ("start", "end")


@dataclass(frozen=True)
class InputVideo:
    """One video of a batch: safe ``video_id``, absolute ``path``, per-video ``metadata``.

    start/end: the video's own time window from a manifest (canonical text such as
    ``"12.5s"`` or ``"300f"``; None where the job's window applies).
    """

    video_id: str
    path: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    start: Optional[str] = None
    end: Optional[str] = None

    @property
    def window(self) -> Window:
        """The video's own window (open sides are None)."""
        return window_of(self.start, self.end)


class InputRow(NamedTuple):
    """One input before ids are assigned: file, given id (or None), metadata, own window."""

    path: Path
    video_id: Optional[str]
    metadata: dict[str, Any]
    start: Optional[str] = None
    end: Optional[str] = None


def is_glob(text: str) -> bool:
    """True when ``text`` contains glob characters."""
    return any(c in text for c in _GLOB_CHARS)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def is_hmrflow_output(folder: str | os.PathLike[str]) -> bool:
    """True for a folder hmrflow wrote (an ``OUT/<video_id>/``: its manifest says so)."""
    import json

    from hmrflow.pipeline.provenance import MANIFEST_FORMAT

    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as fh:
            return json.load(fh).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def scan_folder(folder: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files below ``folder`` (recursive, sorted, hidden entries skipped, symlinks followed once).

    hmrflow's own output folders (overlay videos and exports inside ``OUT/<video_id>/``) are
    not inputs and are skipped, so a batch over a folder that also holds its outputs does
    not feed them back in.
    """
    exts = {e.lower() for e in extensions}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        if is_hmrflow_output(dirpath):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                p = Path(dirpath) / name
                if p.is_file():
                    found.append(p)
    return sorted(found)


def scan_glob(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (``**`` recursive), sorted; folders ignored."""
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))


def _clean_value(v: Any) -> Any:
    """A JSON-able scalar from a pandas cell (NaN/NA -> None, numpy -> Python)."""
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def read_manifest_table(path: Path) -> list[InputRow]:
    """One :class:`InputRow` per row of a CSV/Parquet manifest.

    ``start``/``end`` columns are checked here, before any video is touched: a bad value is
    an :class:`InputError` naming the manifest, the row and the column.
    """
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype={"path": str, "video_id": str}, keep_default_na=True)
        else:
            df = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found") from None
    except Exception as exc:  # pandas raises many types for unreadable files
        raise InputError(f"{path}: cannot read the manifest ({type(exc).__name__}: {exc})") from None
    if "path" not in df.columns:
        raise InputError(
            f"{path}: manifest has no 'path' column (columns: {', '.join(map(str, df.columns)) or 'none'})"
        )
    rows = []
    base = path.parent
    has_id = "video_id" in df.columns
    for i, rec in enumerate(df.to_dict(orient="records")):
        raw = _clean_value(rec.pop("path"))
        if raw is None or str(raw).strip() == "":
            raise InputError(f"{path}: row {i + 1} has an empty 'path'")
        p = Path(os.path.expanduser(str(raw).strip()))
        if not p.is_absolute():
            p = base / p
        vid = _clean_value(rec.pop("video_id")) if has_id else None
        start, end = (_window_cell(path, i, col, rec.pop(col, None)) for col in WINDOW_COLUMNS)
        try:
            window_of(start, end).check_order()
        except ConfigError as exc:
            raise InputError(f"{path}: row {i + 1}: {exc}") from None
        meta = {str(k): _clean_value(v) for k, v in rec.items()}
        rows.append(InputRow(p, None if vid in (None, "") else str(vid), meta, start, end))
    return rows


def _window_cell(path: Path, row: int, column: str, value: Any) -> Optional[str]:
    """Canonical text of a ``start``/``end`` cell (None when empty)."""
    value = _clean_value(value)
    try:
        return canonical(value, column)
    except TimePointError as exc:
        raise InputError(f"{path}: row {row + 1}: {column!r} {value!r}: {exc.reason}") from None


def check_windows(inputs: Iterable[InputVideo], default: Window) -> None:
    """Each video's window over ``default`` (the job's ``--start/--end``) must not be empty.

    Checked before the job starts, so a manifest start after the job's end is one line, not
    one failed video per row.  Mixed units (seconds against frames) need the video's frame
    rate and are checked by the decode stage.  Raises :class:`InputError`.
    """
    for v in inputs:
        if not v.window.is_set:
            continue
        try:
            v.window.over(default).check_order()
        except ConfigError as exc:
            raise InputError(f"{v.path}: time window from the manifest and --start/--end: {exc}") from None


def _avoid_reserved(ids: dict[str, str]) -> dict[str, str]:
    """Suffix ids that equal a reserved name (case-insensitively) with a hash of the path."""
    taken = {v.lower() for v in ids.values()}
    out = {}
    for path, vid in ids.items():
        if vid.lower() in {r.lower() for r in RESERVED_IDS}:
            new = f"{vid}-{short_hash(path)}"
            while new.lower() in taken:
                new = f"{new}-{short_hash(new)}"
            taken.add(new.lower())
            log.info("%s: video id %r is reserved, using %r", path, vid, new)
            vid = new
        out[path] = vid
    return out


def enumerate_inputs(spec: str | os.PathLike[str], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[InputVideo]:
    """The videos named by ``spec`` (see module docstring), sorted by path, ids assigned.

    Raises :class:`InputError` when ``spec`` does not exist, matches nothing, or is a
    manifest that cannot be read, lacks a ``path`` column, or has duplicate/unsafe ids.
    """
    text = os.fspath(spec)
    p = Path(os.path.expanduser(text))
    rows: list[InputRow]
    if p.is_dir():
        rows = [InputRow(f, None, {}) for f in scan_folder(p, extensions)]
        if not rows:
            raise InputError(f"{p}: no video files found (extensions {', '.join(sorted(set(extensions)))})")
    elif p.suffix.lower() in MANIFEST_SUFFIXES and (p.is_file() or not is_glob(text)):
        rows = read_manifest_table(p)
        if not rows:
            raise InputError(f"{p}: the manifest lists no videos")
    elif p.is_file():
        rows = [InputRow(p, None, {})]
    elif is_glob(text):
        rows = [InputRow(f, None, {}) for f in scan_glob(text)]
        if not rows:
            raise InputError(f"{text}: the pattern matches no files")
    else:
        raise InputError(f"{text}: no such file or folder")
    return assign_ids(rows)


def assign_ids(rows: Iterable[InputRow]) -> list[InputVideo]:
    """Absolute paths, given or derived ids (unique, safe, not reserved), merged duplicates."""
    by_path: dict[str, InputRow] = {}
    for row in rows:
        full = os.path.abspath(os.fspath(row.path))
        if full in by_path:
            if by_path[full][1:] != row[1:]:
                log.warning("%s is listed twice with different id/metadata/window; using the first", full)
            continue
        by_path[full] = row
    given = {full: row.video_id for full, row in by_path.items() if row.video_id is not None}
    for full, vid in given.items():
        if not is_safe_video_id(vid) or vid.lower() in {r.lower() for r in RESERVED_IDS}:
            raise InputError(
                f"{full}: video_id {vid!r} is not a safe id (letters, digits, '.', '_', '-'; not {JOB_DIR!r})"
            )
    derived = assign_video_ids([f for f in by_path if f not in given])
    ids = {**derived, **given}
    seen: dict[str, str] = {}
    for full, vid in ids.items():
        key = vid.lower()
        if key in seen:
            if full in given and seen[key] in given:
                raise InputError(f"video_id {vid!r} is given to two files: {seen[key]} and {full}")
            # a derived id collides with a given one: make the derived one unique
            victim = seen[key] if seen[key] not in given else full
            ids[victim] = f"{ids[victim]}-{short_hash(victim)}"
            seen[ids[victim].lower()] = victim
            if victim != full:
                seen[key] = full
            continue
        seen[key] = full
    ids = _avoid_reserved(ids)
    return sorted(
        (
            InputVideo(video_id=ids[full], path=full, metadata=dict(row.metadata), start=row.start, end=row.end)
            for full, row in by_path.items()
        ),
        key=lambda v: (v.path, v.video_id),
    )
