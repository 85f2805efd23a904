"""Atomic writes: no half-written file or directory under the final name, even on SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hmrflow.pipeline.atomic import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    exchange_paths,
    remove_stale_temps,
)


class Boom(RuntimeError):
    pass


def _entries(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_write_bytes_text_json_round_trip(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01abc")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"b": [1, 2.5], "a": None})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01abc"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": None, "b": [1, 2.5]}
    assert (tmp_path / "c.json").read_text().index('"a"') < (tmp_path / "c.json").read_text().index('"b"')
    assert _entries(tmp_path) == ["a.bin", "b.txt", "c.json"]  # no temporaries left


def test_replace_keeps_old_content_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new but half")
            raise Boom
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["data.bin"]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_new_file_absent_after_exception(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "x.npy") as tmp:
            tmp.write_bytes(b"partial")
            raise Boom
    assert _entries(tmp_path) == []


def test_unserialisable_json_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "m.json", {"x": object()})
    with pytest.raises(ValueError):  # NaN is not JSON
        atomic_write_json(tmp_path / "m.json", {"x": float("nan")})
    assert _entries(tmp_path) == []


def test_atomic_path_requires_written_file_and_parent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.bin"):
            pass
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "missing_dir" / "f.bin"):
            pass
    assert _entries(tmp_path) == []


def test_directory_created_and_replaced(tmp_path: Path) -> None:
    final = tmp_path / "out" / "vid"
    with atomic_directory(final) as d:
        (d / "a.txt").write_text("one")
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text("two")
    assert (final / "a.txt").read_text() == "one" and (final / "sub" / "b.txt").read_text() == "two"
    with atomic_directory(final) as d:
        (d / "c.txt").write_text("three")
    assert _entries(final) == ["c.txt"]  # replaced whole, not merged
    assert _entries(final.parent) == ["vid"]  # no temp / old siblings


def test_directory_untouched_on_exception(tmp_path: Path) -> None:
    final = tmp_path / "vid"
    with atomic_directory(final) as d:
        (d / "a.txt").write_text("complete")
    with pytest.raises(Boom):
        with atomic_directory(final) as d:
            (d / "a.txt").write_text("half")
            raise Boom
    assert (final / "a.txt").read_text() == "complete"
    assert _entries(tmp_path) == ["vid"]
    with pytest.raises(Boom):
        with atomic_directory(tmp_path / "new") as d:
            (d / "x").write_text("x")
            raise Boom
    assert _entries(tmp_path) == ["vid"]


def test_directory_refuses_to_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "vid").write_text("a file")
    with pytest.raises(FileExistsError):
        with atomic_directory(tmp_path / "vid") as d:
            (d / "a").write_text("x")
    assert (tmp_path / "vid").read_text() == "a file"
    assert _entries(tmp_path) == ["vid"]


def test_exchange_swaps_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not exchange_paths(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here (fallback path is used)")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def test_fallback_without_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmrflow.pipeline.atomic as atomic

    monkeypatch.setattr(atomic, "exchange_paths", lambda a, b: False)
    final = tmp_path / "vid"
    for content in ("one", "two"):
        with atomic_directory(final) as d:
            (d / "f").write_text(content)
    assert (final / "f").read_text() == "two"
    assert _entries(tmp_path) == ["vid"]


def test_remove_stale_temps(tmp_path: Path) -> None:
    stale = tmp_path / ".vid.tmp-abc"
    stale.mkdir()
    (tmp_path / ".vid.old-def").write_text("x")
    (tmp_path / ".other.tmp-123").write_text("x")
    (tmp_path / "vid").mkdir()
    old = time.time() - 7200
    for p in tmp_path.iterdir():
        os.utime(p, (old, old))
    fresh = tmp_path / ".vid.tmp-fresh"
    fresh.write_text("being written")
    removed = remove_stale_temps(tmp_path, name="vid", older_than_s=3600)
    assert sorted(p.name for p in removed) == [".vid.old-def", ".vid.tmp-abc"]
    assert _entries(tmp_path) == [".other.tmp-123", ".vid.tmp-fresh", "vid"]


# ------------------------------------------------------------- killed mid-write
_WRITER = r"""
import sys, time
from pathlib import Path
from hmrflow.pipeline.atomic import atomic_path, atomic_directory
mode, target, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
chunk = b"N" * (1 << 16)
if mode == "file":
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(chunk); fh.flush()
            ready.write_text("go")
            while True:  # never finishes: killed here
                fh.write(chunk); fh.flush(); time.sleep(0.01)
else:
    with atomic_directory(target) as d:
        (d / "tracks.parquet").write_bytes(chunk)
        ready.write_text("go")
        i = 0
        while True:
            (d / f"track_{i}.npz").write_bytes(chunk); i += 1; time.sleep(0.01)
"""


def _run_and_kill(mode: str, target: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready.flag"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, mode, str(target), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, f"writer exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "writer never started writing"
            time.sleep(0.02)
        time.sleep(0.1)  # let it write some more
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_file_write_keeps_old_file(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = work / "manifest.json"
    atomic_write_text(target, "old complete content")
    _run_and_kill("file", target, tmp_path)
    assert target.read_text() == "old complete content"
    leftovers = [n for n in _entries(work) if n != "manifest.json"]
    assert leftovers and all(n.startswith(".manifest.json.tmp-") for n in leftovers)  # hidden temp only
    assert remove_stale_temps(work, name="manifest.json", older_than_s=0)
    assert _entries(work) == ["manifest.json"]


def test_sigkill_mid_directory_write_leaves_no_final_dir(tmp_path: Path) -> None:
    work = tmp_path / "out"
    work.mkdir()
    _run_and_kill("dir", work / "vid", tmp_path)
    names = _entries(work)
    assert "vid" not in names
    assert names and all(n.startswith(".vid.tmp-") for n in names)


def test_sigkill_mid_directory_replace_keeps_previous_output(tmp_path: Path) -> None:
    work = tmp_path / "out"
    with atomic_directory(work / "vid") as d:
        (d / "manifest.json").write_text("previous")
    _run_and_kill("dir", work / "vid", tmp_path)
    assert _entries(work / "vid") == ["manifest.json"]
    assert (work / "vid" / "manifest.json").read_text() == "previous"
