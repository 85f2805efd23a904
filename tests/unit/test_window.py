"""Time windows (``--start/--end``, ``decode.start/end``): parsing, resolution, decoding, the run CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmrflow.pipeline.config import DecodeConfig, load_config
from hmrflow.pipeline.errors import ConfigError, VideoDecodeError
from hmrflow.pipeline.types import ClipRef
from hmrflow.pipeline.window import TimePoint, Window, canonical, parse_time_point, task_window, with_task_window
from hmrflow.stages import decode as decode_mod
from hmrflow.stages.decode import DecodeStage, select_indices
from hmrflow.stages.decode_decord import decord_available
from tests import videos as V

BACKENDS = ["av"] + (["decord"] if decord_available() else [])


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "value, expected",
    [
        ("12.5", TimePoint(12.5, "s")),
        ("12.5s", TimePoint(12.5, "s")),
        (" 3 S ", TimePoint(3.0, "s")),
        (".5", TimePoint(0.5, "s")),
        (12, TimePoint(12.0, "s")),  # YAML/CSV numbers are seconds
        (0.25, TimePoint(0.25, "s")),
        ("300f", TimePoint(300.0, "f")),
        ("0F", TimePoint(0.0, "f")),
        ("1e1s", TimePoint(10.0, "s")),
        (None, None),
        ("", None),
        ("  ", None),
    ],
)
def test_time_points_parse(value, expected) -> None:
    assert parse_time_point(value) == expected


def test_canonical_text_round_trips() -> None:
    assert canonical("12.5") == "12.5s" and canonical(2) == "2s" and canonical("300f") == "300f"
    assert canonical(0.1) == "0.1s" and parse_time_point(canonical(1234.5678)) == TimePoint(1234.5678, "s")


@pytest.mark.parametrize(
    "value, reason",
    [
        ("1.2x", "expected seconds (12.5 or 12.5s) or a frame number (300f)"),
        ("12.5 sec", "expected seconds"),
        ("1:30", "expected seconds"),
        ("-1", "must not be negative"),
        ("-3f", "must not be negative"),
        (-0.5, "must not be negative"),
        ("2.5f", "a frame number must be a whole number"),
        ("nan", "not a finite number"),
        (float("inf"), "not a finite number"),
        (True, "expected seconds"),
        ([1], "expected seconds"),
    ],
)
def test_bad_time_points_are_one_line_errors_naming_the_value(value, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_time_point(value, "--start")
    msg = str(info.value)
    assert msg.startswith(f"--start {value!r}: ") and reason in msg and "\n" not in msg


def test_window_order_is_checked_for_same_units_and_with_a_frame_rate_for_mixed_ones() -> None:
    assert Window.parse("1", "2.5s") == Window(TimePoint(1.0, "s"), TimePoint(2.5, "s"))
    assert Window.parse(None, "300f").record() == {"start": None, "end": "300f"}
    for start, end in (("3s", "2s"), ("3", "3s"), ("40f", "40f")):
        with pytest.raises(ConfigError, match=rf"--end {canonical(end)} must be after --start {canonical(start)}"):
            Window.parse(start, end, what="--")
    mixed = Window.parse("60f", "1.5s")  # needs the frame rate: accepted here ...
    with pytest.raises(VideoDecodeError, match=r"clip.mp4: time window: end 1.5s must be after start 60f \(at 30 fps"):
        mixed.check_fits("clip.mp4", 120, 4.0, 30.0)  # ... refused against the video (60f = 2 s)
    Window.parse("30f", "1.5s").check_fits("clip.mp4", 120, 4.0, 30.0)  # 1 s < 1.5 s


def test_start_beyond_the_video_is_refused_naming_the_file() -> None:
    with pytest.raises(VideoDecodeError, match=r"^a\.mp4: start 4s is beyond the video's duration \(4\.000 s\)$"):
        Window.parse("4").check_fits("a.mp4", 120, 4.0, 30.0)
    with pytest.raises(VideoDecodeError, match=r"a\.mp4: start 120f is beyond the video's last frame .*0-119"):
        Window.parse("120f").check_fits("a.mp4", 120, 4.0, 30.0)
    Window.parse("119f", "500f").check_fits("a.mp4", 120, 4.0, 30.0)  # an end after the video is cut, not refused
    assert Window.parse("119f", "500f").end_beyond(120, 4.0) and not Window.parse("1", "4s").end_beyond(120, 4.0)


def test_resolve_on_the_timestamp_table() -> None:
    pts = np.arange(120, dtype=np.int64).astype(np.float64) * np.float64(1 / 30)  # 30 fps, float ticks
    assert Window.parse("1", "2.5").resolve("c", pts) == (30, 75)  # 1.0 <= t < 2.5: frames 30-74
    assert Window.parse("300f").resolve("c", np.arange(400) / 30.0) == (300, 400)
    assert Window.parse("10f", "20f").resolve("c", pts) == (10, 20)
    assert Window.parse(None, "1").resolve("c", pts) == (0, 30)
    assert Window.parse("3.5", "99").resolve("c", pts) == (105, 120)  # end clamped to the last frame
    vfr = np.array([0.0, 0.05, 0.08, 0.31, 0.32, 0.65])
    assert Window.parse("0.06", "0.32").resolve("c", vfr) == (2, 4)  # first frame at/after 0.06; t < 0.32
    with pytest.raises(VideoDecodeError, match=r"c: the time window \[0\.1s, 0\.3s\) holds no frame"):
        Window.parse("0.1", "0.3").resolve("c", vfr)  # between frames 0.08 and 0.31
    with pytest.raises(VideoDecodeError, match="start 0.7s is beyond the video's last frame"):
        Window.parse("0.7").resolve("c", vfr)


def test_select_indices_counts_max_frames_from_the_window_start() -> None:
    pts = np.arange(90) / 30.0
    assert select_indices(pts, None, 4, first=30, stop=75).tolist() == [30, 31, 32, 33]
    assert select_indices(pts, 10.0, None, first=31, stop=40).tolist() == [31, 33, 36, 39]  # slots from t = 0
    assert select_indices(pts, None, None, first=70, stop=None).tolist() == list(range(70, 90))


def test_task_windows_ride_on_the_clip() -> None:
    clip = ClipRef("v", "v.mp4", fps=30.0)
    assert with_task_window(clip, {}) is clip
    windowed = with_task_window(clip, {"window": {"start": "10f", "end": None}})
    assert (windowed.start, windowed.end) == ("10f", None)
    assert task_window({"window": {"start": "1s", "end": "2s"}}) == Window.parse("1", "2")


# ------------------------------------------------------------------ config
def test_config_keys_take_numbers_or_text_and_reject_bad_windows() -> None:
    cfg = load_config("clip", ["decode.start=12.5", "decode.end=900f"])
    assert (cfg.decode.start, cfg.decode.end) == ("12.5s", "900f")
    assert cfg.decode.window == Window(TimePoint(12.5, "s"), TimePoint(900.0, "f"))
    assert load_config("clip").decode.window == Window() and not load_config("clip").decode.window.is_set
    assert load_config("clip", ["decode.start=1"]).config_hash() != load_config("clip").config_hash()
    for overrides, message in (
        (["decode.start=1.2x"], r"decode\.start: expected seconds .* \(got '1\.2x'\)"),
        (["decode.end=-2"], r"decode\.end: must not be negative"),
        (["decode.start=5", "decode.end=2s"], r"invalid config: decode\.end 2s must be after decode\.start 5s"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            load_config("clip", overrides)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------ decoding
@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> V.WrittenVideo:
    return V.make_video(tmp_path_factory.mktemp("win") / "gop.mp4", n_frames=90, size=(96, 64), gop=12)


def _decode(path: Path, clip_kw: dict | None = None, **cfg) -> tuple[np.ndarray, np.ndarray, list[int]]:
    batches = list(DecodeStage(DecodeConfig(batch_size=7, **cfg))(ClipRef("c", str(path), **(clip_kw or {}))))
    idx = np.concatenate([b.frame_idx for b in batches])
    pts = np.concatenate([b.pts for b in batches])
    drawn = [V.read_index(im) for b in batches for im in b.images]  # the index painted into each frame
    return idx, pts, drawn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"start": "1.0", "end": "2.5"}, list(range(30, 75))),
        ({"start": "50f", "end": "61f"}, list(range(50, 61))),
        ({"start": "85f"}, list(range(85, 90))),
        ({"end": "0.2"}, list(range(0, 6))),
        ({"start": "1", "end": "2.5", "max_frames": 4}, [30, 31, 32, 33]),
        ({"start": "31f", "end": "40f", "target_fps": 10.0}, [31, 33, 36, 39]),
    ],
)
def test_decoding_a_window_keeps_the_videos_indices_and_timestamps(gop_video, backend, cfg, expected) -> None:
    idx, pts, drawn = _decode(gop_video.path, backend=backend, **cfg)
    assert idx.tolist() == expected
    assert drawn == expected  # the pixels are those frames, not the first frames of the file
    np.testing.assert_allclose(pts, gop_video.pts[expected], atol=1e-9)


def test_vfr_window_in_seconds(tmp_path: Path) -> None:
    v = V.make_video(tmp_path / "vfr.mp4", n_frames=60, size=(96, 64), fps=25, vfr=True, gop=10)
    want = [i for i, t in enumerate(v.pts) if 0.77 <= t < 1.5]
    for backend in BACKENDS:
        idx, pts, drawn = _decode(v.path, backend=backend, start="0.77", end="1.5s")
        assert idx.tolist() == want and drawn == want and want[0] > 0
        np.testing.assert_allclose(pts, v.pts[want], atol=1e-9)


def test_av_seeks_instead_of_decoding_the_frames_before_the_window(gop_video, monkeypatch) -> None:
    seen: list[int] = []
    finish = decode_mod._AvReader.finish

    def counting_finish(self) -> None:
        seen.append(self.n_decoded)
        finish(self)

    monkeypatch.setattr(decode_mod._AvReader, "finish", counting_finish)
    idx, _, _ = _decode(gop_video.path, start="60f", end="66f")
    assert idx.tolist() == list(range(60, 66))
    # keyframes every 12 frames: from the one at 60 to a few frames past 66 (reordering), not 0-66
    assert seen and seen[0] <= 20


def test_a_clips_own_window_wins_per_side_over_the_config(gop_video) -> None:
    idx, _, _ = _decode(gop_video.path, {"start": "20f"}, start="10f", end="25f")
    assert idx.tolist() == list(range(20, 25))  # start from the clip, end from the config


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"start": "3"}, r"gop\.mp4: start 3s is beyond the video's duration \(3\.000 s\)"),
        ({"start": "90f"}, r"gop\.mp4: start 90f is beyond the video's last frame \(it has 90 frames, 0-89\)"),
        ({"start": "2s", "end": "30f"}, r"gop\.mp4: time window: end 30f must be after start 2s"),
    ],
)
def test_decode_refuses_windows_outside_the_video_before_decoding(gop_video, cfg, message) -> None:
    with pytest.raises(VideoDecodeError, match=message):
        DecodeStage(DecodeConfig(**cfg))(ClipRef("c", str(gop_video.path)))  # raises at the call, not mid-stream


# ------------------------------------------------------------------ the run command, end to end
@pytest.fixture()
def fake_run(monkeypatch):
    """``hmrflow run`` with the test suite's fast stages around the real probe, decode and write."""
    from hmrflow.jobs import pipelines
    from tests.integration.fake_stages import make_spec

    monkeypatch.setattr(pipelines, "build_spec", lambda cfg, out_root, pipeline=None: make_spec(cfg, Path(out_root)))


def test_run_on_a_window_writes_the_videos_own_frame_numbers_and_times(tmp_path: Path, fake_run) -> None:
    from hmrflow.jobs.cli import main

    v = V.make_video(tmp_path / "clip.mp4", n_frames=90, size=(64, 48), gop=15)
    out = tmp_path / "out"
    assert main(["run", str(v.path), "-o", str(out), "--start", "1.0", "--end", "2.5s"]) == 0
    tracks = pd.read_parquet(out / "clip" / "tracks.parquet")
    assert tracks.frame_idx.min() == 30 and tracks.frame_idx.max() == 74
    assert tracks.pts_s.min() == pytest.approx(1.0, abs=1e-9) and tracks.pts_s.max() == pytest.approx(74 / 30, abs=1e-9)
    for npz in sorted((out / "clip").glob("track_*.npz")):
        with np.load(npz) as z:
            assert z["frame_idx"][0] == 30 and z["frame_idx"][-1] == 74
            np.testing.assert_allclose(z["pts"][[0, -1]], v.pts[[30, 74]], atol=1e-9)
    man = json.loads((out / "clip" / "manifest.json").read_text())
    assert man["extra"]["window"] == {"start": "1s", "end": "2.5s"}
    assert (man["config"]["decode"]["start"], man["config"]["decode"]["end"]) == ("1s", "2.5s")
    assert man["counts"]["frames_decoded"] == 45
    assert {(t["first_frame"], t["last_frame"]) for t in man["tracks"]} == {(30, 74)}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--start", "1.2x"], "hmrflow run: error: --start '1.2x': expected seconds (12.5 or 12.5s) or a frame number"),
        (["--start", "-1"], "hmrflow run: error: --start '-1': must not be negative"),
        (["--start", "2", "--end", "1s"], "hmrflow run: error: --end 1s must be after --start 2s"),
        (["--start", "5"], "clip.mp4: start 5s is beyond the video's duration (1.000 s)"),
        (["--start", "30f"], "clip.mp4: start 30f is beyond the video's last frame (it has 30 frames, 0-29)"),
        (["--start", "20f", "--end", "0.5"], "clip.mp4: time window: end 0.5s must be after start 20f"),
    ],
)
def test_run_refuses_bad_windows_with_exit_code_2_and_one_line(
    tmp_path: Path, fake_run, capsys, flags, message
) -> None:
    from hmrflow.jobs.cli import main

    v = V.make_video(tmp_path / "clip.mp4", n_frames=30, size=(64, 48))
    code = main(["run", str(v.path), "-o", str(tmp_path / "out"), *flags])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()  # refused before anything ran
