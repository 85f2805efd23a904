"""DecodeStage: order, orientation, timestamps, subsampling, resizing, batching, backends, damage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hmrflow.pipeline.config import DecodeConfig
from hmrflow.pipeline.errors import VideoDecodeError
from hmrflow.pipeline.types import ClipRef, FrameBatch
from hmrflow.stages.decode import DecodeStage, SlotSelector, iter_av_batches, make_plan, output_size, select_indices
from hmrflow.stages.decode_decord import decord_available, repair_padded_rgb
from tests import videos as V

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord not installed")


def decode_all(path: Path | str, **cfg) -> tuple[list[FrameBatch], np.ndarray, np.ndarray, np.ndarray]:
    """All batches plus concatenated frame_idx (N,), pts (N,), images (N,H,W,3)."""
    batches = list(DecodeStage(DecodeConfig(**cfg))(ClipRef("clip", str(path))))
    idx = np.concatenate([b.frame_idx for b in batches])
    pts = np.concatenate([b.pts for b in batches])
    images = np.concatenate([b.images for b in batches])
    return batches, idx, pts, images


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, V.WrittenVideo]:
    d = tmp_path_factory.mktemp("decode")
    out = {
        f"rot{r}": V.make_video(d / f"rot{r}.mp4", n_frames=12, size=(128, 96), rotation=r) for r in (0, 90, 180, 270)
    }
    out["vfr"] = V.make_video(d / "vfr.mp4", n_frames=25, size=(128, 96), fps=25, vfr=True)
    out["long"] = V.make_video(d / "long.mp4", n_frames=60, size=(160, 120), gop=10)
    out["long_fs"] = V.make_video(d / "long_fs.mp4", n_frames=60, size=(160, 120), gop=10, faststart=True)
    return out


# -------------------------------------------------------------- pure helpers
def test_slot_selector_picks_first_frame_of_each_slot() -> None:
    pts = np.arange(30) / 30.0  # 30 fps -> 10 fps keeps every third frame, float rounding included
    assert select_indices(pts, 10.0).tolist() == list(range(0, 30, 3))
    assert select_indices(pts, None).tolist() == list(range(30))
    assert select_indices(pts, 60.0).tolist() == list(range(30))  # never invents frames
    vfr = np.array([0.0, 0.05, 0.08, 0.31, 0.32, 0.65])  # long gap skips slots
    assert select_indices(vfr, 10.0).tolist() == [0, 3, 5]
    assert select_indices(pts, 10.0, max_frames=4).tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError):
        SlotSelector(0.0)


def test_output_size_keeps_aspect_and_never_enlarges() -> None:
    assert output_size(3840, 2160, 640) == (640, 360)
    assert output_size(480, 640, 320) == (240, 320)
    assert output_size(100, 50, 640) == (100, 50)
    assert output_size(100, 50, None) == (100, 50)


def test_repair_padded_rgb() -> None:
    img = np.arange(4 * 16 * 3, dtype=np.uint8).reshape(4, 16, 3)
    padded = np.zeros((4, 16 * 6), np.uint8)  # rows padded to 96 bytes, as decord sees width 16
    padded[:, :48] = img.reshape(4, 48)
    assert np.array_equal(repair_padded_rgb(padded.reshape(4, 16, 6)), img)
    assert repair_padded_rgb(img) is img


# --------------------------------------------------------------------- av path
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_gives_upright_frames(vids, rotation: int) -> None:
    v = vids[f"rot{rotation}"]
    _, idx, pts, images = decode_all(v.path, batch_size=5)
    assert images.shape == (12, 96, 128, 3)  # upright size whatever the stored size
    assert images.dtype == np.uint8
    assert all(V.marker_corner(im) == "tl" for im in images)
    assert [V.read_index(im) for im in images] == list(range(12))
    assert idx.tolist() == list(range(12))
    np.testing.assert_allclose(pts, v.pts, atol=1e-9)


def test_streaming_batch_sizes(vids) -> None:
    batches, idx, _, _ = decode_all(vids["long"].path, batch_size=16)
    assert [len(b) for b in batches] == [16, 16, 16, 12]
    assert idx.tolist() == list(range(60))
    assert all(b.video_id == "clip" and b.pts.dtype == np.float64 and b.frame_idx.dtype == np.int64 for b in batches)


def test_stage_streams_lazily(vids) -> None:
    """The first batch arrives without decoding the rest (stop early; nothing else decoded)."""
    it = DecodeStage(DecodeConfig(batch_size=4))(ClipRef("c", str(vids["long"].path)))
    first = next(it)
    assert first.frame_idx.tolist() == [0, 1, 2, 3]
    it.close()


def test_vfr_pts_preserved_and_subsampling_by_time(vids) -> None:
    v = vids["vfr"]
    _, idx, pts, images = decode_all(v.path)
    np.testing.assert_allclose(pts, v.pts, atol=1e-9)
    assert [V.read_index(im) for im in images] == list(range(25))
    _, idx10, pts10, images10 = decode_all(v.path, target_fps=10.0)
    expected = select_indices(v.pts, 10.0)
    assert idx10.tolist() == expected.tolist()
    # first frame of every 0.1 s slot that holds a frame
    slots = np.floor(v.pts * 10 + 1e-4).astype(int)
    first_in_slot = [int(np.flatnonzero(slots == s)[0]) for s in np.unique(slots)]
    assert idx10.tolist() == first_in_slot
    np.testing.assert_allclose(pts10, v.pts[expected], atol=1e-9)
    assert [V.read_index(im) for im in images10] == expected.tolist()


def test_max_side_and_max_frames(vids) -> None:
    _, idx, _, images = decode_all(vids["rot90"].path, max_side=64, max_frames=5, batch_size=2)
    assert images.shape == (5, 48, 64, 3)
    assert idx.tolist() == [0, 1, 2, 3, 4]
    assert V.marker_corner(images[0]) == "tl"
    assert [V.read_index(im) for im in images] == [0, 1, 2, 3, 4]


def test_tiny_and_large_videos(tmp_path: Path) -> None:
    tiny = V.make_video(tmp_path / "tiny.mp4", n_frames=6, size=(16, 16), pattern="solid")
    _, idx, _, images = decode_all(tiny.path)
    assert images.shape == (6, 16, 16, 3)
    levels = images.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [V.solid_level(i) for i in range(6)], atol=4)
    big = V.make_video(tmp_path / "big.mp4", n_frames=3, size=(3840, 2160), preset="ultrafast")
    _, idx, _, images = decode_all(big.path, max_side=640, batch_size=2)
    assert images.shape == (3, 360, 640, 3)
    assert [V.read_index(im) for im in images] == [0, 1, 2]


def test_av_resume_after_index(vids) -> None:
    """The av fallback resumes after the last frame another backend delivered."""
    from hmrflow.stages.video_probe import scan_video

    cfg = DecodeConfig(batch_size=8, target_fps=10.0)
    path = str(vids["long"].path)
    plan = make_plan(ClipRef("c", path), scan_video(path), cfg)
    full = np.concatenate([b.frame_idx for b in iter_av_batches(plan)])
    rest = np.concatenate([b.frame_idx for b in iter_av_batches(plan, after_idx=int(full[3]), already=4)])
    assert full.tolist() == list(range(0, 60, 3))
    assert rest.tolist() == full[4:].tolist()


# ---------------------------------------------------------------- backends
@needs_decord
@pytest.mark.parametrize(
    "name,cfg",
    [
        ("rot0", {}),
        ("rot90", {"batch_size": 5}),
        ("rot180", {}),
        ("rot270", {"max_side": 64}),
        ("vfr", {"target_fps": 10.0}),
        ("long", {"max_side": 100, "batch_size": 7, "max_frames": 30}),
    ],
)
def test_av_and_decord_agree(vids, name: str, cfg: dict) -> None:
    path = vids[name].path
    ba, ia, pa, xa = decode_all(path, backend="av", **cfg)
    bd, id_, pd_, xd = decode_all(path, backend="decord", **cfg)
    assert [len(b) for b in ba] == [len(b) for b in bd]
    assert ia.tolist() == id_.tolist()
    assert np.array_equal(pa, pd_)
    assert xa.shape == xd.shape
    assert np.abs(xa.astype(np.int16) - xd.astype(np.int16)).mean() < 3.0
    assert V.marker_corner(xd[0]) == "tl"


@needs_decord
def test_decord_padded_width_frames(tmp_path: Path) -> None:
    """Width 48 makes decord 0.6.0 report 4 channels; the worker repairs it."""
    v = V.make_video(tmp_path / "w48.mp4", n_frames=8, size=(48, 64), rotation=90)
    _, ia, _, xa = decode_all(v.path, backend="av")
    _, id_, _, xd = decode_all(v.path, backend="decord")
    assert xd.shape == xa.shape == (8, 64, 48, 3)
    assert ia.tolist() == id_.tolist()
    assert np.abs(xa.astype(np.int16) - xd.astype(np.int16)).mean() < 3.0


@needs_decord
def test_decord_stall_is_killed_and_auto_falls_back(vids, caplog) -> None:
    path = vids["rot0"].path
    with pytest.raises(VideoDecodeError, match="decord failed: no frames"):
        decode_all(path, backend="decord", decord_timeout_s=0.001)
    with caplog.at_level(logging.WARNING, logger="hmrflow.stages.decode"):
        _, idx, _, images = decode_all(path, backend="auto", decord_timeout_s=0.001)
    assert idx.tolist() == list(range(12))
    assert [V.read_index(im) for im in images] == list(range(12))
    assert "decord failed" in caplog.text


@needs_decord
def test_auto_resumes_with_av_when_decord_fails_midway(vids, tmp_path: Path, caplog) -> None:
    """decord stops at corrupt data in the middle; av continues after its last frame."""
    bad = V.corrupt_middle(vids["long"].path, tmp_path / "cm.mp4", at=0.5, n_bytes=3000)
    with caplog.at_level(logging.WARNING):
        _, idx_auto, _, _ = decode_all(bad, backend="auto", batch_size=8)
        _, idx_av, _, _ = decode_all(bad, backend="av", batch_size=8)
    assert idx_auto.tolist() == idx_av.tolist()
    assert np.all(np.diff(idx_auto) > 0)


# ------------------------------------------------------------------ bad input
def _bad_files(d: Path, vids) -> dict[str, Path]:
    good = vids["long"].path
    return {
        "missing": d / "missing.mp4",
        "empty": V.write_bytes(d / "empty.mp4", b""),
        "garbage": V.write_garbage(d / "garbage.mp4"),
        "text": V.write_bytes(d / "notes.mp4", b"just some text\n" * 20),
        "png": V.make_png(d / "still.png"),
        "audio": V.make_audio_only(d / "audio.m4a"),
        "trunc_end": V.truncate(good, d / "trunc_end.mp4", 0.5),
        "codec": V.make_unknown_codec(good, d / "codec.mp4"),
        "zero": V.make_video(d / "zero.avi", n_frames=0, codec="mpeg4").path,
    }


@pytest.mark.parametrize(
    "case,reason",
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("garbage", "not a video"),
        ("text", "plain text"),
        ("png", "still image"),
        ("audio", "no video stream"),
        ("trunc_end", "no index"),
        ("codec", "unsupported video codec"),
        ("zero", "no frames"),
    ],
)
@pytest.mark.parametrize("allow", [True, False])
def test_bad_files_raise_naming_the_file(vids, tmp_path: Path, case: str, reason: str, allow: bool) -> None:
    path = _bad_files(tmp_path, vids)[case]
    with pytest.raises(VideoDecodeError) as info:
        DecodeStage(DecodeConfig(allow_truncated=allow))(ClipRef("c", str(path)))  # raises before iterating
    assert info.value.path == str(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_absurd_resolution_refused_before_decoding(vids) -> None:
    with pytest.raises(VideoDecodeError, match="exceeds the limit"):
        DecodeStage(DecodeConfig(max_pixels=100 * 100))(ClipRef("c", str(vids["long"].path)))


def test_truncated_index_at_front(vids, tmp_path: Path, caplog) -> None:
    cut = V.truncate(vids["long_fs"].path, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoDecodeError, match="truncated") as info:
        DecodeStage(DecodeConfig(allow_truncated=False))(ClipRef("c", str(cut)))
    assert info.value.path == str(cut)
    with caplog.at_level(logging.WARNING):
        _, idx, pts, images = decode_all(cut, allow_truncated=True)
    assert 10 < len(idx) < 60
    assert "damaged video" in caplog.text
    # what is delivered is correct: the index pattern matches the original index and time
    assert [V.read_index(im) for im in images] == idx.tolist()
    np.testing.assert_allclose(pts, vids["long_fs"].pts[idx], atol=1e-9)


def test_corrupt_middle(vids, tmp_path: Path, caplog) -> None:
    bad = V.corrupt_middle(vids["long"].path, tmp_path / "cm.mp4", at=0.5, n_bytes=3000)
    with pytest.raises(VideoDecodeError) as info:
        list(DecodeStage(DecodeConfig(allow_truncated=False))(ClipRef("c", str(bad))))
    assert info.value.path == str(bad)
    with caplog.at_level(logging.WARNING):
        _, idx, _, _ = decode_all(bad, allow_truncated=True)
    assert 40 <= len(idx) < 60
    assert idx[0] == 0 and idx[-1] == 59 and np.all(np.diff(idx) > 0)
    assert "damaged video" in caplog.text


def test_rgb_view_equals_pyav_arrays_with_and_without_resizing(tmp_path):
    import av

    from hmrflow.jobs.bench.decode_fps import write_clip
    from hmrflow.stages.decode import RESIZE_INTERPOLATION, rgb_view

    path = tmp_path / "c.mp4"
    write_clip(path, 3, 96, 64)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        same = rgb_view(frame, 96, 64)
        assert same.shape == (64, 96, 3) and np.array_equal(same, frame.to_ndarray(format="rgb24"))
        small = rgb_view(frame, 50, 34)  # odd width: the buffer's rows are padded
        want = frame.to_ndarray(format="rgb24", width=50, height=34, interpolation=RESIZE_INTERPOLATION)
        assert small.shape == (34, 50, 3) and np.array_equal(small, want)
