"""AMASS-style .npz loading/saving: z-up -> y-up, layouts, errors, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmrflow.pipeline.errors import HmrflowError
from hmrflow.priors.amass import AmassFormatError, iter_amass_dir, load_amass_npz, save_amass_npz
from hmrflow.priors.motion_library import MOTIONS


def _zup_file(
    path: Path,
    n: int = 240,
    width: int = 72,
    rate_key: str = "mocap_framerate",
    rate: float = 120.0,
    yaw_deg: float = 30.0,
) -> np.ndarray:
    """An upright z-up AMASS motion (root = Rz(yaw) Rx(+90)), knees bending; returns poses."""
    rng = np.random.default_rng(0)
    poses = np.zeros((n, width))
    poses[:, :3] = (
        Rotation.from_euler("z", yaw_deg, degrees=True) * Rotation.from_euler("x", 90, degrees=True)
    ).as_rotvec()
    poses[:, 3:width] = rng.normal(0, 0.05, size=(n, width - 3))
    poses[:, 4 * 3] = np.linspace(0, 1.2, n)  # left knee flexes
    trans = np.stack([np.linspace(0, 1, n), np.full(n, 2.0), np.full(n, 0.9)], -1)  # z-up: height in z
    np.savez(path, poses=poses, trans=trans, **{rate_key: np.float64(rate)}, betas=np.zeros(16), gender="male")
    return poses


def test_zup_upright_becomes_yup_upright(tmp_path: Path) -> None:
    _zup_file(tmp_path / "a.npz", yaw_deg=30.0)
    m = load_amass_npz(tmp_path / "a.npz")
    assert m.fps == 120.0 and m.n_frames == 240 and m.name == "a"
    up = Rotation.from_rotvec(m.poses[:, 0].astype(np.float64)).apply([0.0, 1.0, 0.0])
    np.testing.assert_allclose(up, np.tile([0.0, 1.0, 0.0], (240, 1)), atol=1e-5)
    # height z=0.9 -> y=0.9; x stays; z-up y=2 -> y-up z=-2
    np.testing.assert_allclose(m.trans[0], [0.0, 0.9, -2.0], atol=1e-6)
    # local joint rotations are untouched
    np.testing.assert_allclose(m.poses[-1, 4, 0], 1.2, atol=1e-6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    m = MOTIONS["walk"](np.random.default_rng(0), 2.0, 30.0, direction=70.0, start_xz=(1.0, -3.0))
    for j0 in (None, np.array([0.001, -0.22, 0.028])):
        path = save_amass_npz(m, tmp_path / "walk.npz", root_joint=j0)
        raw = np.load(path)
        assert raw["poses"].shape == (60, 72) and raw["poses"].dtype == np.float32
        # the saved file is z-up: pelvis height in trans z (the exact J0 frame change shifts it a bit)
        assert 0.6 < raw["trans"][:, 2].mean() < 1.2
        back = load_amass_npz(path, root_joint=j0)
        rel = Rotation.from_rotvec(back.poses.reshape(-1, 3).astype(np.float64)).inv() * Rotation.from_rotvec(
            m.poses.reshape(-1, 3).astype(np.float64)
        )
        assert rel.magnitude().max() < 1e-5
        np.testing.assert_allclose(back.trans, m.trans, atol=1e-5)
        assert back.fps == m.fps and list(back.labels) == list(m.labels)


def test_root_joint_frame_change_is_a_rigid_motion(tmp_path: Path) -> None:
    _zup_file(tmp_path / "a.npz", n=4)
    j0 = np.array([0.002, -0.24, 0.03])
    m = load_amass_npz(tmp_path / "a.npz", root_joint=j0)
    raw = np.load(tmp_path / "a.npz")
    r = Rotation.from_euler("x", -90, degrees=True)
    # the root joint's world position J0 + transl moves as a point
    np.testing.assert_allclose(m.trans + j0, r.apply(raw["trans"] + j0), atol=1e-6)


@pytest.mark.parametrize("width,rate_key", [(156, "mocap_framerate"), (165, "mocap_frame_rate")])
def test_smplh_smplx_take_body_joints(tmp_path: Path, width: int, rate_key: str) -> None:
    poses = _zup_file(tmp_path / "h.npz", n=10, width=width, rate_key=rate_key, rate=60.0)
    m = load_amass_npz(tmp_path / "h.npz")
    assert m.fps == 60.0
    np.testing.assert_allclose(m.poses[:, 1:22].reshape(10, -1), poses[:, 3:66], atol=1e-6)
    assert np.all(m.poses[:, 22:] == 0.0)  # SMPL hand joints: not in SMPL-H/X body


def test_root_orient_pose_body_layout(tmp_path: Path) -> None:
    n = 8
    ro = np.tile(Rotation.from_euler("x", 90, degrees=True).as_rotvec(), (n, 1))
    pb = np.full((n, 63), 0.1)
    np.savez(tmp_path / "g.npz", root_orient=ro, pose_body=pb, trans=np.zeros((n, 3)), mocap_frame_rate=30.0)
    m = load_amass_npz(tmp_path / "g.npz")
    np.testing.assert_allclose(m.poses[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 1:22], 0.1, atol=1e-6)


def test_resample_120_to_30_keeps_duration(tmp_path: Path) -> None:
    _zup_file(tmp_path / "a.npz", n=240, rate=120.0)
    m = load_amass_npz(tmp_path / "a.npz", fps=30.0)
    assert m.fps == 30.0 and m.n_frames == 60 and abs(m.duration_s - 2.0) < 1e-9
    full = load_amass_npz(tmp_path / "a.npz")
    np.testing.assert_allclose(m.poses[:, 4, 0], full.poses[::4, 4, 0], atol=1e-5)
    np.testing.assert_allclose(m.trans, full.trans[::4], atol=1e-6)


def test_errors_name_file_and_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "nokey.npz", trans=np.zeros((3, 3)), mocap_framerate=30.0)
    with pytest.raises(AmassFormatError, match=r"nokey\.npz.*'poses'"):
        load_amass_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "notrans.npz", poses=np.zeros((3, 72)), mocap_framerate=30.0)
    with pytest.raises(HmrflowError, match=r"notrans\.npz.*'trans'"):
        load_amass_npz(tmp_path / "notrans.npz")
    np.savez(tmp_path / "norate.npz", poses=np.zeros((3, 72)), trans=np.zeros((3, 3)))
    with pytest.raises(AmassFormatError, match="mocap_framerate"):
        load_amass_npz(tmp_path / "norate.npz")
    np.savez(tmp_path / "short.npz", poses=np.zeros((3, 30)), trans=np.zeros((3, 3)), mocap_framerate=30.0)
    with pytest.raises(AmassFormatError, match=r"\(T, 72\+\)"):
        load_amass_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "mismatch.npz", poses=np.zeros((3, 72)), trans=np.zeros((4, 3)), mocap_framerate=30.0)
    with pytest.raises(AmassFormatError, match="'trans' must be"):
        load_amass_npz(tmp_path / "mismatch.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(AmassFormatError, match="garbage"):
        load_amass_npz(tmp_path / "garbage.npz")


def test_iter_amass_dir(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    _zup_file(tmp_path / "sub" / "b.npz", n=120)
    _zup_file(tmp_path / "sub" / "deeper" / "a.npz", n=60)
    np.savez(tmp_path / "sub" / "shape.npz", betas=np.zeros(16))
    (tmp_path / "broken.npz").write_bytes(b"xx")
    ms = list(iter_amass_dir(tmp_path, fps=30.0))
    assert [m.name for m in ms] == ["sub/b", "sub/deeper/a"]
    assert [m.n_frames for m in ms] == [30, 15]
    with pytest.raises(AmassFormatError):
        list(iter_amass_dir(tmp_path, fps=30.0, skip_errors=False))


def test_train_prior_amass_option_adds_the_folder_to_the_motion_bank(tmp_path: Path) -> None:
    """``hmrflow train prior --amass DIR``: the documented option reaches the training bank."""
    import argparse

    from hmrflow.jobs.train.prior import add_arguments
    from hmrflow.priors.motion_diffusion.train import TrainConfig, build_bank

    _zup_file(tmp_path / "long.npz", n=480)  # 4 s at 120 fps -> 120 frames at 30 fps
    _zup_file(tmp_path / "short.npz", n=120)  # 30 frames at 30 fps: shorter than a window
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--amass", str(tmp_path)])
    assert args.amass_dir == str(tmp_path)
    cfg = TrainConfig(n_motions=2, motion_seconds=3.0, window=64, amass_dir=args.amass_dir)
    bank = build_bank(cfg, range(2))
    assert len(bank) == 3  # 2 library motions + the AMASS file long enough for a window
    assert bank.rotmats[-1].shape == (120, 24, 3, 3)
    # upright in the y-up world: the root's body-up axis (its y column) points up
    assert float(np.median(bank.rotmats[-1][:, 0, 1, 1])) > 0.9


def test_track_npz_is_smpl_with_amass_body_keys(tmp_path: Path) -> None:
    """hmrflow's track npz: SMPL-72 poses, plus root_orient/pose_body slices a body loader reads."""
    from hmrflow.pipeline.config import PipelineConfig, WriteConfig
    from hmrflow.pipeline.results import VideoResult
    from hmrflow.pipeline.types import ClipRef, SMPLSequence
    from hmrflow.stages.write import WriteStage

    rng = np.random.default_rng(3)
    t = 25
    aa = rng.normal(0, 0.6, size=(t, 24, 3))
    seq = SMPLSequence(
        video_id="clip",
        track_id=4,
        betas=rng.normal(size=10).astype(np.float32),
        frame_idx=np.arange(100, 100 + t, dtype=np.int64),
        pts=np.arange(100, 100 + t) / 30.0,
        observed=np.ones(t, bool),
        rotmats=Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(t, 24, 3, 3).astype(np.float32),
        transl=(rng.normal(size=(t, 3)) + [0, 0, 4]).astype(np.float32),
        confidence=np.ones(t, np.float32),
    )
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"stands in for a video: only hashed")
    result = VideoResult(
        clip=ClipRef("clip", str(video), fps=30.0, n_frames=200),
        sequences=[seq],
        config=PipelineConfig().resolved_dict(),
        timings_s={},
        extra={},
    )
    out = WriteStage(WriteConfig(), tmp_path / "out")(result)
    with np.load(out / "track_4.npz", allow_pickle=False) as z:
        poses = z["poses"]
        assert poses.shape == (t, 72) and z["betas"].shape == (10,)  # SMPL, not SMPL-H's 156 / 16
        assert str(z["surface_model_type"]) == "smpl"
        assert z["root_orient"].shape == (t, 3) and z["pose_body"].shape == (t, 63)
        np.testing.assert_array_equal(z["root_orient"], poses[:, :3])
        np.testing.assert_array_equal(z["pose_body"], poses[:, 3:66])
        # the body keys hold the estimated joints 0-21 (not some other slice): same rotations as rotmats
        body = Rotation.from_rotvec(np.concatenate([z["root_orient"], z["pose_body"]], 1).reshape(-1, 3))
        ref = Rotation.from_matrix(seq.rotmats[:, :22].reshape(-1, 3, 3).astype(np.float64))
        assert np.max((body.inv() * ref).magnitude()) < 1e-4
        body_only = {k: z[k] for k in ("root_orient", "pose_body", "trans", "mocap_framerate")}
    # an AMASS-style body loader reading root_orient + pose_body gets SMPL's first 22 joints, hands zero
    np.savez(tmp_path / "body_only.npz", **body_only)
    m = load_amass_npz(tmp_path / "body_only.npz")
    full = load_amass_npz(out / "track_4.npz")  # 'poses' (72) is read as SMPL: hands kept
    np.testing.assert_allclose(m.poses[:, 1:22], full.poses[:, 1:22], atol=1e-6)
    np.testing.assert_allclose(m.poses[:, 0], full.poses[:, 0], atol=1e-5)
    assert np.all(m.poses[:, 22:] == 0) and np.any(full.poses[:, 22:] != 0)
