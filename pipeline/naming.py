"""Turning user file names into safe, unique ``video_id`` s and output folders.

A ``video_id`` names the folder ``OUT/<video_id>/``, so it must be harmless on every
filesystem and shell: only ``[A-Za-z0-9._-]``, no leading dot or dash (no hidden files, no
options), no ``..``, no separators, at most :data:`MAX_ID_LEN` characters, never empty.
Names that had to be shortened or that sanitise to nothing get a short hash of the
original so that different inputs stay distinguishable.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Hashable, Iterable, TypeVar

from hmrflow.pipeline.errors import UnsafeFileError

#: Longest video_id produced (room for a hash suffix included).
MAX_ID_LEN = 96
#: Hex digits of the hash suffixes.
HASH_LEN = 8

_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

P = TypeVar("P", bound=Hashable)


def short_hash(text: str, n: int = HASH_LEN) -> str:
    """First ``n`` hex digits of the sha256 of ``text`` (UTF-8, surrogates escaped)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def _basename(path_or_name: str | os.PathLike[str]) -> str:
    """Last component of a POSIX or Windows path, whatever the current OS."""
    text = os.fspath(path_or_name)
    if isinstance(text, bytes):  # pragma: no cover - os.fspath of bytes paths
        text = text.decode("utf-8", "surrogateescape")
    text = text.replace("\x00", "").replace("\\", "/").rstrip("/")
    return text.rsplit("/", 1)[-1]


def _stem(name: str) -> str:
    """File name without its last extension (``clip.final.mp4`` -> ``clip.final``, ``.mp4`` -> ``""``)."""
    head, dot, _ext = name.rpartition(".")
    return head if dot else name  # ".mp4" -> "" (no stem: the caller hashes the name)


def is_safe_video_id(video_id: str) -> bool:
    """True when ``video_id`` is already a valid id (what :func:`sanitize_video_id` returns)."""
    return (
        isinstance(video_id, str)
        and 0 < len(video_id) <= MAX_ID_LEN
        and _SAFE_ID.fullmatch(video_id) is not None
        and ".." not in video_id
        and not video_id.endswith(".")
    )


def sanitize_video_id(path_or_name: str | os.PathLike[str], max_len: int = MAX_ID_LEN) -> str:
    """A safe ``video_id`` from a file path or name: its sanitised stem.

    ``"/data/My Clip (1).mp4"`` -> ``"My_Clip_1"``; ``"../../etc/passwd.mp4"`` -> ``"passwd"``;
    accents are transliterated (``"café.mp4"`` -> ``"cafe"``), other characters become ``_``.
    When the result must be shortened to ``max_len`` or is empty, a hash of the original
    file name is appended / used (``"video-1a2b3c4d"``), so the id is never empty and two long
    names that share a prefix stay distinct.
    """
    if max_len < HASH_LEN + 8:
        raise ValueError(f"max_len must be at least {HASH_LEN + 8}, got {max_len}")
    original = os.fspath(path_or_name)
    original = original.decode("utf-8", "surrogateescape") if isinstance(original, bytes) else original
    name = _basename(original)
    stem = _stem(name)
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_CHARS.sub("_", ascii_stem)
    cleaned = re.sub(r"\.{2,}", ".", cleaned)  # no '..'
    cleaned = re.sub(r"_{2,}", "_", cleaned)
    cleaned = cleaned.strip("._-")  # no leading dot/dash, no trailing dot
    if not cleaned:
        return f"video-{short_hash(name)}"
    if len(cleaned) > max_len:
        keep = cleaned[: max_len - HASH_LEN - 1].rstrip("._-")
        cleaned = f"{keep}-{short_hash(name)}"
    return cleaned


def assign_video_ids(paths: Iterable[P], max_len: int = MAX_ID_LEN) -> dict[P, str]:
    """Unique, safe ids for a batch of inputs: ``{path: video_id}`` (keys as given).

    Each id is :func:`sanitize_video_id` of the path.  When several *different* paths
    get the same id (``a/clip.mp4`` and ``b/clip.mp4``; compared case-insensitively, since
    ``Clip`` and ``clip`` are the same folder on macOS/Windows), every one of them gets
    ``-<hash of its absolute path>`` appended, so the result does not depend on the order
    of ``paths``.  The same path given twice gets one id.
    """
    unique: dict[str, P] = {}
    for p in paths:
        unique.setdefault(os.path.abspath(os.fspath(p)), p)  # type: ignore[call-overload]
    base = {full: sanitize_video_id(full, max_len) for full in unique}
    groups: dict[str, list[str]] = defaultdict(list)
    for full, vid in base.items():
        groups[vid.lower()].append(full)
    taken = {key for key, members in groups.items() if len(members) == 1}
    result: dict[str, str] = {}
    for key in sorted(groups):
        members = groups[key]
        if len(members) == 1:
            result[members[0]] = base[members[0]]
            continue
        for full in sorted(members):
            n = HASH_LEN
            while True:
                suffix = "-" + short_hash(full, n)
                stem = base[full][: max_len - len(suffix)].rstrip("._-") or "video"
                candidate = stem + suffix
                if candidate.lower() not in taken:
                    break
                n += 4  # astronomically rare: widen the hash
            taken.add(candidate.lower())
            result[full] = candidate
    return {unique[full]: vid for full, vid in result.items()}


def safe_output_dir(root: str | os.PathLike[str], video_id: str) -> Path:
    """``root / video_id``, refusing anything that is not a plain child folder of ``root``.

    Raises :class:`UnsafeFileError` when ``video_id`` is not a valid id (separators,
    ``..``, absolute, empty, odd characters) or when the folder resolves outside ``root``
    (e.g. a symlink planted there).  The folder is not created.
    """
    if not is_safe_video_id(video_id):
        raise UnsafeFileError(
            f"{video_id!r}: not a safe video id (allowed: letters, digits, '.', '_', '-', no leading dot, "
            f"no '..', at most {MAX_ID_LEN} characters); refusing to write outside {os.fspath(root)}"
        )
    root_path = Path(root).resolve()
    target = (root_path / video_id).resolve()
    if target.parent != root_path:
        raise UnsafeFileError(f"{root_path / video_id}: resolves to {target}, outside the output root {root_path}")
    return root_path / video_id


def run_video_id(path: str | os.PathLike[str], out_root: str | os.PathLike[str]) -> str:
    """The id ``hmrflow run`` writes ``path`` under in ``out_root``: its sanitised stem, unless
    ``out_root/<stem>/`` already holds the output of *another* input (or something that is not
    an hmrflow output); then ``-<hash of the absolute path>`` is appended, as the batch job does
    for inputs that share a stem, so no run replaces another input's results.
    """
    import json

    full = os.path.abspath(os.fspath(path))
    vid = sanitize_video_id(full)
    existing = Path(out_root) / vid
    if not existing.exists():
        return vid
    try:
        recorded = json.loads((existing / "manifest.json").read_text(encoding="utf-8"))["input"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded == full:
        return vid
    suffix = "-" + short_hash(full)
    return (vid[: MAX_ID_LEN - len(suffix)].rstrip("._-") or "video") + suffix
