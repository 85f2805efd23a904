"""Crash-safe writes: a file or directory appears under its final name complete, or not at all.

Everything is built under a temporary name in the *same directory* as the target (so the
final ``rename`` never crosses a filesystem), flushed and fsync'ed, then renamed into place.
An exception removes the temporary; a killed process (SIGKILL, power loss) can leave a
temporary behind, but never a half-written file or directory under the final name.
Temporaries are hidden siblings named ``.<name>.tmp-<random>`` so they can never be mistaken
for outputs; :func:`remove_stale_temps` clears old ones.

Replacing an existing directory uses Linux ``renameat2(RENAME_EXCHANGE)`` when the
filesystem supports it (an atomic swap); elsewhere the old directory is first renamed aside
to ``.<name>.old-<random>``, so a crash between the two renames leaves the previous complete
output there and no directory under the final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"

PathLike = str | os.PathLike[str]


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path``: ``.<name><tag><random>``."""
    return path.with_name(f".{path.name}{tag}{secrets.token_hex(6)}")


def _fsync_dir(directory: Path) -> None:
    """Persist a directory entry change (rename/create); a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file or directory tree if it exists (errors logged, not raised)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove temporary %s: %s", path, exc)


# ----------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path; on normal exit it is fsync'ed and renamed to ``path``.

    Write the whole file to the yielded path (with any library: ``np.save``,
    ``pq.write_table``, ``torch.save``...).  If the block raises, the temporary is
    removed and ``path`` is left untouched (an existing file keeps its old content).
    The parent directory must exist.
    """
    final = Path(path)
    if not final.parent.is_dir():
        raise FileNotFoundError(f"{final.parent}: directory does not exist (cannot write {final.name})")
    tmp = _sibling(final, TMP_TAG)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written to the temporary file for {final}")
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the final path."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def dumps_json(obj: Any) -> str:
    """Canonical, human-readable JSON: sorted keys, 2-space indent, no NaN, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as canonical JSON (see :func:`dumps_json`) atomically.

    Serialisation happens before anything touches the disk, so an unserialisable
    object raises without leaving a file.
    """
    return atomic_write_text(path, dumps_json(obj))


# ------------------------------------------------------------------------ directories
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2() -> Any:
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # old glibc / musl without the wrapper
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange_paths(a: PathLike, b: PathLike) -> bool:
    """Atomically swap two existing paths (Linux ``RENAME_EXCHANGE``).

    Returns False when the platform or filesystem cannot do it (the caller falls back);
    raises ``OSError`` for real errors (missing path, permissions).
    """
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(err)}", str(a), None, str(b))


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (bottom-up)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                _fsync_file(p)
        _fsync_dir(Path(dirpath))


def _install_directory(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` directory to ``final``, replacing an old one."""
    for _attempt in range(5):
        if not final.exists() and not final.is_symlink():
            try:
                os.rename(tmp, final)
                return
            except OSError as exc:  # someone else installed it meanwhile: replace theirs
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue
        if final.is_symlink() or not final.is_dir():
            raise FileExistsError(f"{final}: exists and is not a directory; refusing to replace it")
        if exchange_paths(tmp, final):
            _remove(tmp)  # now holds the previous output
            return
        aside = _sibling(final, OLD_TAG)
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            continue  # vanished meanwhile: retry the plain rename
        os.rename(tmp, final)
        _remove(aside)
        return
    raise OSError(f"{final}: could not install the new directory (it kept being replaced concurrently)")


@contextlib.contextmanager
def atomic_directory(final_dir: PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on normal exit it replaces ``final_dir`` whole.

    Build the complete output inside the yielded directory.  On success every file is
    fsync'ed and the directory is renamed (or atomically swapped) into place, so readers
    see either the previous complete output or the new complete output, never a mixture.
    On an exception the temporary directory is deleted and ``final_dir`` is untouched.
    The parent directory is created if needed.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, TMP_TAG)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _install_directory(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(final.parent)


def remove_stale_temps(parent: PathLike, name: str | None = None, older_than_s: float = 3600.0) -> list[Path]:
    """Delete leftover temporaries of killed writers in ``parent``; returns what was removed.

    Only hidden entries made by this module (``.<name>.tmp-*`` / ``.<name>.old-*``) whose
    modification time is older than ``older_than_s`` are touched; ``name`` limits the
    clean-up to the temporaries of one target.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    now = time.time()
    removed = []
    prefix = f".{name}" if name is not None else "."
    for entry in parent.iterdir():
        n = entry.name
        if not n.startswith(prefix) or (TMP_TAG not in n and OLD_TAG not in n):
            continue
        if name is not None and n.rsplit(TMP_TAG if TMP_TAG in n else OLD_TAG, 1)[0] != f".{name}":
            continue
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        if age >= older_than_s:
            _remove(entry)
            removed.append(entry)
    return removed


def check_output_root(root: PathLike) -> Path:
    """Make sure ``root`` is a folder this process can write into, before any work starts.

    Creates it (with parents) when missing.  Raises :class:`~hmrflow.pipeline.errors.ConfigError`
    with one line naming the path when it is a file, or cannot be created or written
    (read-only, no permission), so a run never fails at the very end after all the work.
    """
    from hmrflow.pipeline.errors import ConfigError

    p = Path(root)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the output root exists and is a file, not a folder; choose another --out")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = _sibling(p / "write-check", TMP_TAG)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot write outputs here ({exc.strerror or exc}); choose another --out") from None
    return p
