"""probe_video / to_clip_ref and the ``hmrflow probe`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.cli import main
from hmrflow.pipeline.errors import VideoDecodeError
from hmrflow.stages.video_probe import probe_video, scan_video, to_clip_ref
from tests import videos as V


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    return {
        "plain": V.make_video(d / "plain.mp4", n_frames=15, size=(128, 96), fps=30).path,
        "rot90": V.make_video(d / "rot90.mp4", n_frames=6, size=(128, 96), rotation=90).path,
        "rot270": V.make_video(d / "rot270.mov", n_frames=6, size=(128, 96), rotation=270).path,
        "vfr": V.make_video(d / "vfr.mp4", n_frames=20, size=(64, 48), fps=25, vfr=True).path,
        "mkv": V.make_video(d / "clip.mkv", n_frames=10, size=(64, 48), fps=24).path,
        "text": V.write_bytes(d / "readme.mp4", b"hello\n" * 30),
        "audio": V.make_audio_only(d / "sound.m4a"),
    }


def test_plain_video_facts(files) -> None:
    info = probe_video(files["plain"])
    assert info.path == str(files["plain"])
    assert "mp4" in info.container and info.codec == "h264"
    assert (info.width, info.height, info.rotation) == (128, 96, 0)
    assert (info.upright_width, info.upright_height) == (128, 96)
    assert info.fps == pytest.approx(30.0) and info.measured_fps == pytest.approx(30.0)
    assert not info.vfr
    assert info.n_frames == 15 and info.n_frames_container == 15
    assert info.duration_s == pytest.approx(0.5, abs=1e-3)
    assert info.damage == ""


@pytest.mark.parametrize("name,rotation", [("rot90", 90), ("rot270", 270)])
def test_rotation_from_display_matrix(files, name: str, rotation: int) -> None:
    info = probe_video(files[name])
    assert info.rotation == rotation
    assert (info.width, info.height) == (96, 128)  # stored
    assert (info.upright_width, info.upright_height) == (128, 96)
    clip = to_clip_ref(info, "vid")
    assert (clip.video_id, clip.rotation, clip.width, clip.height, clip.n_frames) == ("vid", rotation, 128, 96, 6)
    assert clip.path == str(files[name]) and clip.fps == pytest.approx(30.0)


def test_vfr_detected_and_pts_table(files) -> None:
    scan = scan_video(files["vfr"])
    expected = V.vfr_pts(20, 25)
    np.testing.assert_allclose(scan.pts_s, expected, atol=1e-9)
    assert scan.info.vfr
    assert scan.info.measured_fps == pytest.approx(19 / expected[-1], rel=1e-6)


def test_frame_count_by_packets_when_container_has_none(files) -> None:
    info = probe_video(files["mkv"])
    assert info.n_frames_container == 0  # Matroska stores no frame count
    assert info.n_frames == 10
    assert info.fps == pytest.approx(24.0) and not info.vfr


def test_probe_errors(files, tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="plain text"):
        probe_video(files["text"])
    with pytest.raises(VideoDecodeError, match="audio only"):
        probe_video(files["audio"])
    with pytest.raises(VideoDecodeError, match="exceeds the limit"):
        probe_video(files["plain"], max_pixels=1000)


def test_cli_probe_human_readable(files, capsys) -> None:
    code = main(["probe", str(files["rot90"]), str(files["vfr"])])
    out = capsys.readouterr()
    assert code == 0
    assert out.out.count("container") == 2
    assert "rotation 90 deg clockwise, displayed 128x96" in out.out
    assert "variable frame rate" in out.out
    assert out.err == ""


def test_cli_probe_json_and_failures(files, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.mp4"
    code = main(["probe", "--json", str(files["text"]), str(files["plain"]), str(missing), str(files["audio"])])
    out = capsys.readouterr()
    assert code == 1
    data = json.loads(out.out)
    assert [d["path"] for d in data] == [str(files["text"]), str(files["plain"]), str(missing), str(files["audio"])]
    assert data[1]["n_frames"] == 15 and data[1]["codec"] == "h264" and "error" not in data[1]
    assert "plain text" in data[0]["error"] and "not found" in data[2]["error"]
    err_lines = out.err.strip().splitlines()
    assert err_lines == [
        f"{files['text']}: not a video: the file is plain text",
        f"{missing}: file not found",
        f"{files['audio']}: no video stream (audio only: audio:aac)",
    ]
    assert "Traceback" not in out.err


def test_cli_probe_bad_file_then_good(files, capsys) -> None:
    code = main(["probe", str(files["audio"]), str(files["plain"])])
    out = capsys.readouterr()
    assert code == 1
    assert str(files["plain"]) in out.out and "frames      15" in out.out
    assert out.err.strip() == f"{files['audio']}: no video stream (audio only: audio:aac)"
