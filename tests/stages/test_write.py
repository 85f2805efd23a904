"""The write stage: file formats (read back with plain pandas/numpy), atomicity, idempotency, manifest."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmrflow.pipeline import provenance
from hmrflow.pipeline.config import PipelineConfig, WriteConfig
from hmrflow.pipeline.errors import UnsafeFileError
from hmrflow.pipeline.provenance import VOLATILE_KEY, build_manifest, file_sha256, stable_part
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.types import ClipRef, SMPLSequence
from hmrflow.stages.write import CAMERA_TO_ZUP, TRACKS_SCHEMA, WriteStage, mocap_framerate

NPZ_KEYS = {
    "poses",
    "root_orient",
    "pose_body",
    "surface_model_type",
    "trans",
    "betas",
    "gender",
    "mocap_framerate",
    "frame_idx",
    "pts",
    "observed",
    "confidence",
    "frame",
    "camera_to_zup",
    "world_global_orient",
    "world_trans",
}


# ------------------------------------------------------------------ test data (numpy only)
def np_axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) Rodrigues in float64, independent of hmrflow's code."""
    aa = np.asarray(aa, np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = np.where(theta > 1e-12, aa / np.maximum(theta, 1e-12), 0.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def random_rotmats(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random rotations (uniform via QR) with identities and near-pi rotations mixed in."""
    q, r = np.linalg.qr(rng.normal(size=shape + (3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    flat = q.reshape(-1, 3, 3)
    flat[::7] = np.eye(3)
    axes = rng.normal(size=(len(flat[3::11]), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    flat[3::11] = np_axis_angle_to_matrix(axes * (np.pi - 1e-4))
    flat[5::13] = np_axis_angle_to_matrix(np.array([0.0, 0.0, np.pi]))
    return flat.reshape(q.shape).astype(np.float32)


def make_sequence(
    rng: np.random.Generator, video_id: str, track_id: int, frame_idx: np.ndarray, fps: float = 30.0
) -> SMPLSequence:
    t = len(frame_idx)
    return SMPLSequence(
        video_id=video_id,
        track_id=track_id,
        betas=rng.normal(size=10).astype(np.float32),
        frame_idx=np.asarray(frame_idx, np.int64),
        pts=np.asarray(frame_idx, np.float64) / fps,
        observed=rng.random(t) > 0.2,
        rotmats=random_rotmats(rng, (t, 24)),
        transl=(rng.normal(size=(t, 3)) + [0, 0, 4]).astype(np.float32),
        confidence=rng.random(t).astype(np.float32),
    )


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "clip.mp4"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(1).bytes(200_000))  # stands in for a video: only hashed
    return path


def make_result(video: Path, n_tracks: int = 3, t: int = 300, seed: int = 0, **extra) -> VideoResult:
    rng = np.random.default_rng(seed)
    seqs = [
        make_sequence(rng, "clip", tid, np.arange(t) + 5 * k)
        for k, tid in enumerate([7, 2, 11][:n_tracks] + list(range(100, 100 + max(0, n_tracks - 3))))
    ]
    cfg = PipelineConfig()
    return VideoResult(
        clip=ClipRef("clip", str(video), fps=30.0, n_frames=t + 10, width=640, height=480),
        sequences=seqs,
        config=cfg.resolved_dict(),
        timings_s={"DecodeStage": 1.25, "total": 3.5},
        extra={"n_frames_decoded": t + 10, **extra},
    )


# ------------------------------------------------------------------------------- formats
def test_parquet_readable_with_pandas_and_round_trips(tmp_path: Path, video: Path) -> None:
    result = make_result(video)
    out = WriteStage(WriteConfig(), tmp_path / "out")(result)
    assert out == (tmp_path / "out" / "clip").resolve()
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "track_11.npz",
        "track_2.npz",
        "track_7.npz",
        "tracks.parquet",
    ]
    df = pd.read_parquet(out / "tracks.parquet")
    assert list(df.columns) == [
        "video_id",
        "track_id",
        "frame_idx",
        "pts_s",
        "pose",
        "betas",
        "transl",
        "confidence",
        "observed",
        "world_global_orient",
        "world_transl",
    ]
    assert len(df) == 900 and (df["video_id"] == "clip").all()
    assert df["track_id"].dtype == np.int64 and df["frame_idx"].dtype == np.int64
    assert df["pts_s"].dtype == np.float64 and df["confidence"].dtype == np.float32 and df["observed"].dtype == bool
    assert list(df["track_id"].drop_duplicates()) == [2, 7, 11]  # sorted by track, then frame
    for seq in result.sequences:
        rows = df[df["track_id"] == seq.track_id]
        assert np.array_equal(rows["frame_idx"].to_numpy(), seq.frame_idx)
        assert np.array_equal(rows["pts_s"].to_numpy(), seq.pts)
        assert np.array_equal(rows["observed"].to_numpy(), seq.observed)
        assert np.array_equal(rows["confidence"].to_numpy(), seq.confidence)
        pose = np.stack(rows["pose"].to_list())
        assert pose.shape == (300, 72) and pose.dtype == np.float32
        back = np_axis_angle_to_matrix(pose.reshape(300, 24, 3))
        np.testing.assert_allclose(back, seq.rotmats, atol=1e-5, rtol=0)
        assert np.linalg.norm(pose.reshape(-1, 3), axis=1).max() <= np.pi + 1e-5
        np.testing.assert_array_equal(np.stack(rows["betas"].to_list()), np.broadcast_to(seq.betas, (300, 10)))
        np.testing.assert_array_equal(np.stack(rows["transl"].to_list()), seq.transl)


def test_parquet_arrow_schema_is_the_documented_one(tmp_path: Path, video: Path) -> None:
    out = WriteStage(WriteConfig(), tmp_path)(make_result(video, n_tracks=1, t=4))
    schema = pq.read_schema(out / "tracks.parquet")
    assert schema.equals(TRACKS_SCHEMA)
    assert schema.field("pose").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 72)
    assert pa.types.is_fixed_size_list(schema.field("betas").type) and schema.field("betas").type.list_size == 10
    assert pa.types.is_fixed_size_list(schema.field("transl").type) and schema.field("transl").type.list_size == 3
    assert schema.field("video_id").type == pa.string()


def test_npz_readable_with_numpy_and_round_trips(tmp_path: Path, video: Path) -> None:
    result = make_result(video)
    out = WriteStage(WriteConfig(), tmp_path)(result)
    for seq in result.sequences:
        with np.load(out / f"track_{seq.track_id}.npz", allow_pickle=False) as z:
            assert set(z.files) == NPZ_KEYS
            assert z["poses"].shape == (300, 72) and z["poses"].dtype == np.float32
            np.testing.assert_allclose(
                np_axis_angle_to_matrix(z["poses"].reshape(300, 24, 3)), seq.rotmats, atol=1e-5, rtol=0
            )
            np.testing.assert_array_equal(z["trans"], seq.transl)
            np.testing.assert_array_equal(z["betas"], seq.betas)
            assert z["betas"].shape == (10,)
            assert str(z["gender"]) == "neutral" and str(z["frame"]) == "opencv_camera"
            assert float(z["mocap_framerate"]) == pytest.approx(30.0, rel=1e-9)
            assert z["frame_idx"].dtype == np.int64 and np.array_equal(z["frame_idx"], seq.frame_idx)
            assert z["pts"].dtype == np.float64 and np.array_equal(z["pts"], seq.pts)
            assert z["observed"].dtype == bool and np.array_equal(z["observed"], seq.observed)
            np.testing.assert_array_equal(z["confidence"], seq.confidence)
            np.testing.assert_array_equal(z["camera_to_zup"], [[1, 0, 0], [0, 0, 1], [0, -1, 0]])
        with zipfile.ZipFile(out / f"track_{seq.track_id}.npz") as zf:  # no wall-clock time inside
            assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_camera_to_zup_maps_forward_and_up() -> None:
    forward_cam, up_cam, right_cam = np.array([0, 0, 1.0]), np.array([0, -1.0, 0]), np.array([1.0, 0, 0])
    np.testing.assert_array_equal(CAMERA_TO_ZUP @ forward_cam, [0, 1, 0])  # z-up frame: y forward
    np.testing.assert_array_equal(CAMERA_TO_ZUP @ up_cam, [0, 0, 1])  # up
    np.testing.assert_array_equal(CAMERA_TO_ZUP @ right_cam, [1, 0, 0])
    assert np.linalg.det(CAMERA_TO_ZUP) == pytest.approx(1.0)


def test_mocap_framerate_median_and_fallback() -> None:
    pts = np.cumsum([0.0] + [1 / 25] * 10 + [0.2] + [1 / 25] * 10)  # one gap of 5 frames
    assert mocap_framerate(pts, 99.0) == pytest.approx(25.0)
    assert mocap_framerate(np.array([0.5]), 29.97) == pytest.approx(29.97)
    assert mocap_framerate(np.zeros(0), 24.0) == 24.0
    vfr = np.array([0.0, 1 / 30, 2 / 30, 2 / 30 + 1 / 15, 2 / 30 + 2 / 15, 2 / 30 + 3 / 15])
    assert mocap_framerate(vfr, 0.0) == pytest.approx(15.0)


def test_single_frame_track_uses_clip_fps(tmp_path: Path, video: Path) -> None:
    rng = np.random.default_rng(3)
    res = VideoResult(
        clip=ClipRef("clip", str(video), fps=24.0), sequences=[make_sequence(rng, "clip", 0, np.array([12]))], config={}
    )
    out = WriteStage(WriteConfig(), tmp_path)(res)
    with np.load(out / "track_0.npz") as z:
        assert float(z["mocap_framerate"]) == 24.0 and z["poses"].shape == (1, 72)


def test_no_tracks_gives_empty_table_with_schema(tmp_path: Path, video: Path) -> None:
    out = WriteStage(WriteConfig(), tmp_path)(make_result(video, n_tracks=0))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tracks.parquet"]
    df = pd.read_parquet(out / "tracks.parquet")
    assert len(df) == 0 and list(df.columns) == TRACKS_SCHEMA.names
    assert pq.read_schema(out / "tracks.parquet").equals(TRACKS_SCHEMA)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tracks"] == 0 and manifest["counts"]["rows"] == 0 and manifest["tracks"] == []


def test_write_config_switches_files(tmp_path: Path, video: Path) -> None:
    out = WriteStage(WriteConfig(parquet=False, npz=False), tmp_path)(make_result(video, t=5))
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert json.loads((out / "manifest.json").read_text())["files"] == {}


# ------------------------------------------------------------------- idempotency, safety
def test_rerun_is_byte_identical_except_volatile(tmp_path: Path, video: Path) -> None:
    stage = WriteStage(WriteConfig(), tmp_path / "out")
    out = stage(make_result(video))
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = stage(make_result(video))  # same root: the old output is replaced
    other = WriteStage(WriteConfig(), tmp_path / "out2")(make_result(video))
    for d in (again, other):
        second = {p.name: p.read_bytes() for p in d.iterdir()}
        assert sorted(second) == sorted(first)
        for name in first:
            if name != "manifest.json":
                assert second[name] == first[name], name
        m1, m2 = json.loads(first["manifest.json"]), json.loads(second["manifest.json"])
        assert stable_part(m1) == stable_part(m2)
        assert set(m1[VOLATILE_KEY]) == {"timings_s", "written_at", "host"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip"]  # no temp/old dirs left


def test_changed_data_changes_files(tmp_path: Path, video: Path) -> None:
    a = WriteStage(WriteConfig(), tmp_path / "a")(make_result(video, seed=0))
    b = WriteStage(WriteConfig(), tmp_path / "b")(make_result(video, seed=1))
    assert (a / "tracks.parquet").read_bytes() != (b / "tracks.parquet").read_bytes()


def test_failure_mid_write_keeps_previous_output(tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmrflow.stages.write as write_mod

    stage = WriteStage(WriteConfig(), tmp_path)
    out = stage(make_result(video, n_tracks=1, t=10))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(write_mod, "build_manifest", boom)  # fails after parquet + npz were written
    with pytest.raises(RuntimeError, match="disk full"):
        stage(make_result(video, n_tracks=3, t=10, seed=5))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "in"]


@pytest.mark.parametrize("bad_id", ["../escape", "/abs", "a/b", "..", ".hidden", ""])
def test_unsafe_video_id_refused(tmp_path: Path, video: Path, bad_id: str) -> None:
    res = VideoResult(clip=ClipRef(bad_id, str(video)), sequences=[], config={})
    root = tmp_path / "root"
    with pytest.raises(UnsafeFileError):
        WriteStage(WriteConfig(), root)(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "root"]
    assert list(root.iterdir()) == []


def test_inconsistent_sequences_refused(tmp_path: Path, video: Path) -> None:
    rng = np.random.default_rng(0)
    clip = ClipRef("clip", str(video), fps=30.0)
    other = VideoResult(clip=clip, sequences=[make_sequence(rng, "other", 1, np.arange(3))], config={})
    with pytest.raises(ValueError, match="another video"):
        WriteStage(WriteConfig(), tmp_path)(other)
    dup = VideoResult(clip=clip, sequences=[make_sequence(rng, "clip", 1, np.arange(3))] * 2, config={})
    with pytest.raises(ValueError, match="appears twice"):
        WriteStage(WriteConfig(), tmp_path)(dup)


# ---------------------------------------------------------------------------- manifest
def test_manifest_contents(tmp_path: Path, video: Path) -> None:
    model = tmp_path / "estimator.safetensors"
    model.write_bytes(b"weights" * 100)
    res = make_result(video, seeds={"refine": 1234}, models={"detector": "a" * 64}, run_id="job-7")
    out = WriteStage(WriteConfig(), tmp_path / "out", models={"estimator": str(model)})(res)
    text = (out / "manifest.json").read_text()
    m = json.loads(text)
    assert m["video_id"] == "clip" and m["format_version"] == 1
    assert m["input"]["path"] == str(video.resolve())
    assert m["input"]["size_bytes"] == 200_000
    assert m["input"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert m["config"] == PipelineConfig().resolved_dict()
    assert m["config_hash"] == PipelineConfig().config_hash()
    assert {"python", "numpy", "torch", "pyarrow", "pandas", "hmrflow"} <= set(m["versions"])
    assert m["versions"]["numpy"] == np.__version__
    assert m["models"]["estimator"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert m["models"]["detector"] == {"sha256": "a" * 64}
    assert m["seeds"] == {"seed": 0, "refine": 1234}
    n_obs = sum(int(s.observed.sum()) for s in res.sequences)
    assert m["counts"] == {
        "tracks": 3,
        "rows": 900,
        "frames_with_tracks": 310,
        "frames_decoded": 310,
        "observed": n_obs,
        "filled": 900 - n_obs,
    }
    assert [t["track_id"] for t in m["tracks"]] == [2, 7, 11]
    assert m["tracks"][0]["first_frame"] == 5 and m["tracks"][0]["last_frame"] == 304
    for name in ("tracks.parquet", "track_2.npz", "track_7.npz", "track_11.npz"):
        assert m["files"][name]["sha256"] == file_sha256(out / name)
        assert m["files"][name]["size_bytes"] == (out / name).stat().st_size
    assert m["extra"] == {"run_id": "job-7"}
    assert m[VOLATILE_KEY]["timings_s"] == {"DecodeStage": 1.25, "total": 3.5}
    assert "hostname" in m[VOLATILE_KEY]["host"]
    assert "NaN" not in text


def test_build_manifest_is_json_serialisable_with_numpy_values(tmp_path: Path, video: Path) -> None:
    res = make_result(video, n_tracks=1, t=3, weird=np.float32(np.nan), arr=np.arange(3), path=tmp_path)
    m = build_manifest(res, {}, {"m": "bundled-tiny-v1"})
    json.dumps(m, allow_nan=False)
    assert m["extra"]["arr"] == [0, 1, 2] and m["extra"]["weird"] is None and m["extra"]["path"] == str(tmp_path)
    assert m["models"]["m"] == {"id": "bundled-tiny-v1"}


def test_missing_input_still_writes(tmp_path: Path, video: Path) -> None:
    res = VideoResult(clip=ClipRef("gone", str(tmp_path / "gone.mp4")), sequences=[], config={})
    out = WriteStage(WriteConfig(), tmp_path / "out")(res)
    m = json.loads((out / "manifest.json").read_text())
    assert m["input"]["sha256"] is None and m["input"]["size_bytes"] is None


def test_input_hashed_once_and_again_when_changed(tmp_path: Path, video: Path) -> None:
    provenance.HASH_CACHE.clear()
    stage = WriteStage(WriteConfig(), tmp_path / "out")
    stage(make_result(video, n_tracks=1, t=5))
    stage(make_result(video, n_tracks=1, t=5))
    assert provenance.HASH_CACHE.misses == 1
    video.write_bytes(b"different content")
    out = stage(make_result(video, n_tracks=1, t=5))
    assert provenance.HASH_CACHE.misses == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["input"]["sha256"] == hashlib.sha256(b"different content").hexdigest()


def test_manifest_records_the_tracklets_and_joins_of_each_track() -> None:
    n = 9
    seq = SMPLSequence(
        video_id="v",
        track_id=4,
        betas=np.zeros(10, np.float32),
        frame_idx=np.arange(n, dtype=np.int64),
        pts=np.arange(n) / 10.0,
        observed=np.array([1, 1, 1, 0, 0, 1, 1, 0, 1], bool),
        rotmats=np.tile(np.eye(3, dtype=np.float32), (n, 24, 1, 1)),
        transl=np.zeros((n, 3), np.float32),
        confidence=np.ones(n, np.float32),
        tracklet=np.array([2, 2, 2, -1, -1, 7, 7, -1, 7], np.int64),
    )
    rec = provenance.tracklet_record(seq)
    assert [t["tracklet"] for t in rec["tracklets"]] == [2, 7]
    assert rec["tracklets"][0]["first_frame"] == 0 and rec["tracklets"][0]["last_frame"] == 2
    assert rec["tracklets"][1]["first_frame"] == 5 and rec["tracklets"][1]["last_frame"] == 8
    (join,) = rec["joins"]
    assert (join["from_tracklet"], join["to_tracklet"]) == (2, 7)
    assert (join["last_frame_before"], join["first_frame_after"]) == (2, 5)
    assert join["gap_s"] == pytest.approx(0.3)
    # a track made of one tracklet has no joins
    one = provenance.tracklet_record(
        SMPLSequence(
            **{
                **{f: getattr(seq, f) for f in ("video_id", "track_id", "betas")},
                **{f: getattr(seq, f) for f in SMPLSequence.ROW_FIELDS},
                "tracklet": np.zeros(n, np.int64),
            }
        )
    )
    assert len(one["tracklets"]) == 1 and one["joins"] == []
