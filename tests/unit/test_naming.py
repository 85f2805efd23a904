"""video_id sanitising, collision handling and output folders that cannot escape the root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmrflow.pipeline.errors import UnsafeFileError
from hmrflow.pipeline.naming import (
    MAX_ID_LEN,
    assign_video_ids,
    is_safe_video_id,
    safe_output_dir,
    sanitize_video_id,
    short_hash,
)

SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _valid(vid: str) -> bool:
    return bool(SAFE.fullmatch(vid)) and ".." not in vid and 0 < len(vid) <= MAX_ID_LEN and "/" not in vid


@pytest.mark.parametrize(
    "name, expected",
    [
        ("clip.mp4", "clip"),
        ("/data/videos/clip_01.mkv", "clip_01"),
        ("../../etc/passwd.mp4", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\Videos\\run.avi", "run"),
        ("My Clip (1).mp4", "My_Clip_1"),
        ("café.mov", "cafe"),
        (".hidden.mp4", "hidden"),
        ("..sneaky..name.mp4", "sneaky.name"),
        ("-rf.mp4", "rf"),
        ("a\x00b.mp4", "ab"),
        ("line\nbreak.mp4", "line_break"),
        ("take.final.v2.mp4", "take.final.v2"),
        ("noext", "noext"),
        (Path("dir") / "p.mp4", "p"),
    ],
)
def test_sanitize_known_answers(name: str, expected: str) -> None:
    assert sanitize_video_id(name) == expected


@pytest.mark.parametrize("name", ["", ".", "..", "/", "../..", "日本語.mp4", "\x00\x00.mp4", "....mp4", "💃.mp4"])
def test_sanitize_never_empty(name: str) -> None:
    vid = sanitize_video_id(name)
    assert _valid(vid)
    assert vid.startswith("video-") and len(vid) == len("video-") + 8


def test_unicode_names_that_vanish_stay_distinct() -> None:
    assert sanitize_video_id("日本.mp4") != sanitize_video_id("中国.mp4")


def test_long_names_are_capped_with_hash() -> None:
    a = sanitize_video_id("x" * 300 + "A.mp4")
    b = sanitize_video_id("x" * 300 + "B.mp4")
    assert len(a) == MAX_ID_LEN and len(b) == MAX_ID_LEN
    assert a != b
    assert a.endswith("-" + short_hash("x" * 300 + "A.mp4"))
    assert sanitize_video_id("y" * MAX_ID_LEN + ".mp4") == "y" * MAX_ID_LEN  # exactly at the cap: unchanged
    assert len(sanitize_video_id("z" * 40 + ".mp4", max_len=20)) == 20


def test_sanitize_depends_on_name_not_folder() -> None:
    assert sanitize_video_id("/a/b/clip.mp4") == sanitize_video_id("clip.mp4")
    long = "q" * 200 + ".mp4"
    assert sanitize_video_id("/a/" + long) == sanitize_video_id("/b/" + long)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_sanitize_always_safe(name: str) -> None:
    vid = sanitize_video_id(name)
    assert _valid(vid), (name, vid)
    assert is_safe_video_id(vid)
    assert sanitize_video_id(vid + ".mp4") == vid  # idempotent on its own output


def test_collisions_get_distinct_ids_independent_of_order() -> None:
    paths = ["a/clip.mp4", "b/clip.mp4", "c/Clip.mov", "d/other.mp4"]
    ids = assign_video_ids(paths)
    assert set(ids) == set(paths)
    assert ids["d/other.mp4"] == "other"
    clip_ids = [ids[p] for p in paths[:3]]
    assert len({v.lower() for v in clip_ids}) == 3  # distinct even on case-insensitive filesystems
    for p in paths[:3]:
        assert ids[p] == sanitize_video_id(p) + "-" + short_hash(os.path.abspath(p))
    assert assign_video_ids(list(reversed(paths))) == ids
    assert all(_valid(v) for v in ids.values())


def test_same_path_twice_gets_one_id() -> None:
    ids = assign_video_ids(["x/clip.mp4", "x/clip.mp4", Path("y/solo.mp4")])
    assert ids == {"x/clip.mp4": "clip", Path("y/solo.mp4"): "solo"}


def test_suffixed_id_cannot_collide_with_a_natural_one() -> None:
    a, b = "a/clip.mp4", "b/clip.mp4"
    natural = "clip-" + short_hash(os.path.abspath(a))
    ids = assign_video_ids([a, b, f"c/{natural}.mp4"])
    assert len(set(ids.values())) == 3
    assert ids[f"c/{natural}.mp4"] == natural
    assert ids[a] != natural


def test_collisions_of_long_names_stay_within_cap() -> None:
    name = "v" * 200 + ".mp4"
    ids = assign_video_ids([f"a/{name}", f"b/{name}"])
    assert len(set(ids.values())) == 2
    assert all(len(v) <= MAX_ID_LEN and _valid(v) for v in ids.values())


def test_safe_output_dir_accepts_plain_ids(tmp_path: Path) -> None:
    assert safe_output_dir(tmp_path, "clip") == tmp_path.resolve() / "clip"
    assert safe_output_dir(tmp_path, "clip-1a2b.v2") == tmp_path.resolve() / "clip-1a2b.v2"
    assert not (tmp_path / "clip").exists()  # not created


@pytest.mark.parametrize(
    "bad",
    ["", ".", "..", "../x", "a/b", "/etc", "a\\b", ".hidden", "x\x00", "a..b", "é", "x\n", "a" * (MAX_ID_LEN + 1)],
)
def test_safe_output_dir_refuses(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafeFileError):
        safe_output_dir(tmp_path, bad)


def test_safe_output_dir_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "clip").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeFileError, match="outside"):
        safe_output_dir(root, "clip")
