"""Exports read back with independent parsers: pandas (TRC, MOT, CSV), bvh (BVH), ezc3d (C3D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.transform import Rotation

from hmrflow.jobs.export import export_video, find_video_outputs, load_video_output
from hmrflow.jobs.export.angles import ANGLE_NAMES, poses_to_angles
from hmrflow.jobs.export.positions import SURFACE_MARKERS
from hmrflow.pipeline.config import WriteConfig
from hmrflow.pipeline.errors import HmrflowError
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.types import ClipRef, SMPLSequence
from hmrflow.priors.body_model import load_body_model
from hmrflow.priors.skeleton import JOINT_NAMES, PARENTS
from hmrflow.stages.write import WriteStage

FPS = 25.0


def make_sequence(rng: np.random.Generator, track_id: int, frame_idx: np.ndarray) -> SMPLSequence:
    """Upright person facing the camera, moderate random joint rotations (< 60 deg)."""
    t = len(frame_idx)
    aa = rng.normal(scale=0.35, size=(t, 24, 3))
    rot = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(t, 24, 3, 3)
    rot[:, 0] = np.diag([1.0, -1.0, -1.0]) @ rot[:, 0]  # upright in the camera (y down)
    return SMPLSequence(
        video_id="clip",
        track_id=track_id,
        betas=rng.normal(scale=0.5, size=10).astype(np.float32),
        frame_idx=np.asarray(frame_idx, np.int64),
        pts=np.asarray(frame_idx, np.float64) / FPS + 0.04,
        observed=rng.random(t) > 0.3,
        rotmats=rot.astype(np.float32),
        transl=(rng.normal(scale=0.2, size=(t, 3)) + [0.3 * track_id, 0.2, 4.0]).astype(np.float32),
        confidence=rng.random(t).astype(np.float32),
    )


def write_output(root: Path, seqs: list[SMPLSequence]) -> Path:
    video = root / "clip.mp4"
    video.write_bytes(b"\0" * 1000)
    clip = ClipRef(video_id="clip", path=str(video), fps=FPS, n_frames=40, width=64, height=48)
    return WriteStage(WriteConfig(), root / "out")(VideoResult(clip=clip, sequences=seqs, config={}))


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("exp")
    return write_output(root, [make_sequence(rng, 1, np.arange(3, 23)), make_sequence(rng, 4, np.arange(0, 12))])


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("synthetic")


def test_reading_matches_written(out_dir: Path) -> None:
    v = load_video_output(out_dir)
    assert v.video_id == "clip" and [t.track_id for t in v.tracks] == [1, 4]
    t = v.track(1)
    assert len(t) == 20 and t.frame_idx[0] == 3
    assert t.frame_rate == pytest.approx(FPS)
    assert find_video_outputs(out_dir.parent) == [out_dir]
    with pytest.raises(HmrflowError):
        find_video_outputs(out_dir / "track_1.npz")


def test_trc_read_back_with_pandas(out_dir: Path, body_model, tmp_path: Path) -> None:
    [path, _] = export_video(out_dir, "trc", tmp_path, body_model)
    header = path.read_text().splitlines()
    assert header[0].split("\t")[:3] == ["PathFileType", "4", "(X/Y/Z)"]
    meta = dict(zip(header[1].split("\t"), header[2].split("\t")))
    assert float(meta["DataRate"]) == pytest.approx(FPS) and meta["Units"] == "mm"
    assert int(meta["NumFrames"]) == 20 and int(meta["NumMarkers"]) == 24
    names = [n for n in header[3].split("\t")[2:] if n]
    assert names == list(JOINT_NAMES)
    df = pd.read_csv(path, sep="\t", skiprows=5, header=None)
    assert df.shape == (20, 2 + 72)
    track = load_video_output(out_dir).track(1)
    np.testing.assert_array_equal(df[0].to_numpy(), track.frame_idx + 1)
    np.testing.assert_allclose(df[1].to_numpy(), track.pts, atol=1e-6)
    # independent forward pass: joints in camera frame -> Y-up mm
    with torch.no_grad():
        j = (
            body_model.forward_axis_angle(
                torch.from_numpy(track.poses),
                torch.from_numpy(np.tile(track.betas, (20, 1))),
                torch.from_numpy(track.transl),
            )
            .joints.double()
            .numpy()
        )
    expect = j * np.array([1.0, -1.0, -1.0]) * 1000.0
    np.testing.assert_allclose(df.iloc[:, 2:].to_numpy().reshape(20, 24, 3), expect, atol=0.05)
    assert (
        df.iloc[:, 3::3].to_numpy().reshape(20, 24)[:, 15] > df.iloc[:, 3::3].to_numpy()[:, 0]
    ).all()  # head above pelvis (Y up)


def test_trc_surface_markers_in_metres(out_dir: Path, body_model, tmp_path: Path) -> None:
    [path, _] = export_video(out_dir, "trc", tmp_path, body_model, markers="joints+surface", units="m")
    lines = path.read_text().splitlines()
    assert lines[2].split("\t")[3:5] == [str(24 + len(SURFACE_MARKERS)), "m"]
    df = pd.read_csv(path, sep="\t", skiprows=5, header=None)
    pos = df.iloc[:, 2:].to_numpy().reshape(len(df), -1, 3)
    assert pos.shape[1] == 45 and np.abs(pos).max() < 10.0  # metres, not millimetres
    names = [n for n in lines[3].split("\t")[2:] if n]
    heel, toe = names.index("left_heel"), names.index("left_big_toe")
    assert np.linalg.norm(pos[:, heel] - pos[:, toe], axis=1).mean() == pytest.approx(0.2, abs=0.12)


def test_mot_and_csv_read_back(out_dir: Path, tmp_path: Path) -> None:
    [mot, _] = export_video(out_dir, "mot", tmp_path)
    lines = mot.read_text().splitlines()
    end = lines.index("endheader")
    head = dict(line.split("=") for line in lines[1:end])
    assert head == {"version": "1", "nRows": "20", "nColumns": str(1 + len(ANGLE_NAMES)), "inDegrees": "yes"}
    df = pd.read_csv(mot, sep="\t", skiprows=end + 1)
    assert list(df.columns) == ["time", *ANGLE_NAMES] and len(df) == 20
    track = load_video_output(out_dir).track(1)
    want = poses_to_angles(track.poses)
    np.testing.assert_allclose(df["time"], track.pts, atol=1e-6)
    for name in ("knee_flexion_l", "hip_flexion_r", "pelvis_tilt"):
        np.testing.assert_allclose(df[name], want[name], atol=1e-5)
    [csv, _] = export_video(out_dir, "csv", tmp_path)
    dc = pd.read_csv(csv)
    assert list(dc.columns[:3]) == ["time", "frame_idx", "observed"]
    np.testing.assert_array_equal(dc["observed"].astype(bool), track.observed)
    np.testing.assert_allclose(dc[list(ANGLE_NAMES)].to_numpy(), df[list(ANGLE_NAMES)].to_numpy(), atol=1e-5)


def _bvh_matrix(z: float, x: float, y: float) -> np.ndarray:
    return Rotation.from_euler("ZXY", [z, x, y], degrees=True).as_matrix()


def test_bvh_read_back_with_bvh_package(out_dir: Path, body_model, tmp_path: Path) -> None:
    bvh = pytest.importorskip("bvh")
    [path, _] = export_video(out_dir, "bvh", tmp_path, body_model)
    mocap = bvh.Bvh(path.read_text())
    track = load_video_output(out_dir).track(1)
    assert mocap.nframes == 20 and mocap.frame_time == pytest.approx(1 / FPS, rel=1e-6)
    assert mocap.get_joints_names() == [JOINT_NAMES[j] for j in _dfs()]
    with torch.no_grad():
        rest = body_model.rest_joints(torch.from_numpy(track.betas[None]))[0].double().numpy()
    for j in range(1, 24):
        np.testing.assert_allclose(mocap.joint_offset(JOINT_NAMES[j]), (rest[j] - rest[PARENTS[j]]) * 100, atol=1e-5)
    rot = track.rotmats()
    for f in range(0, 20, 3):
        for j in range(24):
            z, x, y = mocap.frame_joint_channels(f, JOINT_NAMES[j], ["Zrotation", "Xrotation", "Yrotation"])
            want = rot[f, j] if j else np.diag([1.0, -1.0, -1.0]) @ rot[f, 0]
            err = Rotation.from_matrix(_bvh_matrix(z, x, y).T @ want).magnitude()
            assert np.degrees(err) < 1e-3, (f, j)
        pos = mocap.frame_joint_channels(f, "pelvis", ["Xposition", "Yposition", "Zposition"])
        np.testing.assert_allclose(pos, (track.transl[f] + rest[0]) * [1, -1, -1] * 100, atol=1e-3)


def _dfs() -> list[int]:
    order: list[int] = []

    def visit(j: int) -> None:
        order.append(j)
        for c in np.nonzero(PARENTS == j)[0]:
            visit(int(c))

    visit(0)
    return order


def test_bvh_forward_kinematics_matches_body_model(out_dir: Path, body_model, tmp_path: Path) -> None:
    """Chaining the BVH's offsets and channels reproduces the body model's joints (Y-up, cm)."""
    bvh = pytest.importorskip("bvh")
    [_, path] = export_video(out_dir, "bvh", tmp_path, body_model)
    mocap = bvh.Bvh(path.read_text())
    track = load_video_output(out_dir).track(4)
    with torch.no_grad():
        j = (
            body_model.forward_axis_angle(
                torch.from_numpy(track.poses),
                torch.from_numpy(np.tile(track.betas, (12, 1))),
                torch.from_numpy(track.transl),
            )
            .joints.double()
            .numpy()
        )
    f = 5
    world_r: dict[int, np.ndarray] = {}
    world_p: dict[int, np.ndarray] = {}
    for k in _dfs():
        name = JOINT_NAMES[k]
        r = _bvh_matrix(*mocap.frame_joint_channels(f, name, ["Zrotation", "Xrotation", "Yrotation"]))
        if k == 0:
            world_p[k] = np.array(mocap.frame_joint_channels(f, name, ["Xposition", "Yposition", "Zposition"]))
            world_r[k] = r
        else:
            p = PARENTS[k]
            world_p[k] = world_p[p] + world_r[p] @ np.array(mocap.joint_offset(name))
            world_r[k] = world_r[p] @ r
    got = np.stack([world_p[k] for k in range(24)]) / 100.0
    np.testing.assert_allclose(got, j[f] * [1, -1, -1], atol=2e-4)


def test_c3d_read_back_with_ezc3d(out_dir: Path, body_model, tmp_path: Path) -> None:
    ezc3d = pytest.importorskip("ezc3d")
    paths = export_video(out_dir, "c3d", tmp_path, body_model)
    c = ezc3d.c3d(str(paths[0]))
    assert c["parameters"]["POINT"]["LABELS"]["value"] == list(JOINT_NAMES)
    assert c["parameters"]["POINT"]["RATE"]["value"][0] == pytest.approx(FPS)
    assert c["parameters"]["POINT"]["UNITS"]["value"] == ["mm"]
    pts = c["data"]["points"]
    assert pts.shape == (4, 24, 20)
    trc = export_video(out_dir, "trc", tmp_path / "trc", body_model)[0]
    df = pd.read_csv(trc, sep="\t", skiprows=5, header=None)
    np.testing.assert_allclose(pts[:3].transpose(2, 1, 0).reshape(20, 72), df.iloc[:, 2:].to_numpy(), atol=0.01)


def test_c3d_without_ezc3d_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hmrflow.jobs.export import c3d

    monkeypatch.setattr(c3d, "ezc3d_available", lambda: False)
    with pytest.raises(HmrflowError, match="pip install ezc3d"):
        c3d.write_c3d(tmp_path / "x.c3d", ["a"], np.zeros((2, 1, 3)), 30.0)


def test_cli_export(out_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hmrflow.jobs.cli import main

    assert main(["export", str(out_dir.parent), "--format", "csv", "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_track1.csv", "clip_track4.csv"]
    assert main(["export", str(tmp_path / "nothing"), "--format", "csv"]) == 2


def test_world_frame_export_puts_the_body_where_the_world_columns_say() -> None:
    """The exporters turn camera data upright with diag(1, -1, -1); a world-frame track is
    handed to them so that this turn gives back the world frame exactly (J0 included)."""
    import torch

    from hmrflow.jobs.export import world_as_camera
    from hmrflow.jobs.export.positions import rest_joints, track_positions
    from hmrflow.jobs.export.reading import TrackData
    from hmrflow.priors.body_model import load_body_model

    rng = np.random.default_rng(3)
    t = 12
    body = load_body_model("synthetic")
    poses = rng.normal(0, 0.3, (t, 72)).astype(np.float32)
    world = TrackData(
        track_id=1,
        frame_idx=np.arange(t),
        pts=np.arange(t) / 30.0,
        poses=np.zeros((t, 72), np.float32),
        transl=np.zeros((t, 3), np.float32),
        betas=rng.normal(0, 0.5, 10).astype(np.float32),
        observed=np.ones(t, bool),
        confidence=np.ones(t, np.float32),
        world_orient=poses[:, :3].copy(),
        world_transl=rng.normal(0, 1, (t, 3)).astype(np.float32),
    )
    world = TrackData(**{**world.__dict__, "poses": poses})
    assert world.has_world
    moved = world_as_camera(world, rest_joints(world, body)[0])
    got = track_positions(moved, body) @ np.diag([1.0, -1.0, -1.0])
    wpose = poses.copy()
    wpose[:, :3] = world.world_orient
    with torch.no_grad():
        want = body.forward_axis_angle(
            torch.from_numpy(wpose),
            torch.from_numpy(np.tile(world.betas, (t, 1))),
            torch.from_numpy(world.world_transl),
        ).joints.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_bvh_channels_are_continuous_through_a_turn() -> None:
    """A root turning steadily through 360 degrees and a knee passing the Euler branch
    switch: every channel changes by a few degrees per frame, never by a turn."""
    from hmrflow.jobs.export.bvh import EULER_SEQ, motion_values

    t = 90
    rot = np.tile(np.eye(3), (t, 24, 1, 1))
    rot[:, 0] = (
        np.diag([1.0, -1.0, -1.0]) @ Rotation.from_euler("y", np.linspace(0, 360, t)[:, None], degrees=True).as_matrix()
    )
    rot[:, 4] = Rotation.from_euler(
        "ZXY", np.stack([np.full(t, 170.0), np.linspace(80, 100, t), np.zeros(t)], 1), degrees=True
    ).as_matrix()
    vals = motion_values(rot, np.zeros((t, 3)), np.zeros((24, 3)))
    assert np.abs(np.diff(vals[:, 3:], axis=0)).max() < 10.0
    # still the same rotations
    back = Rotation.from_euler(EULER_SEQ, vals[:, 3:6], degrees=True).as_matrix()
    np.testing.assert_allclose(back, np.diag([1.0, -1.0, -1.0]) @ rot[:, 0], atol=1e-9)
