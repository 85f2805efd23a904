"""The camera of a clip: user intrinsics, the field-of-view network, camera rotation from the
background, gravity and ground from the people, and the world stage's exact conversions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hmrflow.pipeline.config import CameraConfig, load_config
from hmrflow.pipeline.errors import ConfigError
from hmrflow.pipeline.types import ClipRef, SMPLSequence
from hmrflow.priors.rotations import axis_angle_to_matrix, rotation_z_to
from hmrflow.stages.camera.ground import fit_ground, world_from_camera
from hmrflow.stages.camera.intrinsics import centred, user_intrinsics
from hmrflow.stages.camera.motion import MotionTracker, rotations_from_homographies
from hmrflow.stages.camera.world import WorldStage, smooth_depth, to_camera


def _rot(axis: tuple[float, float, float], deg: float) -> np.ndarray:
    a = np.asarray(axis, np.float64)
    return axis_angle_to_matrix(torch.from_numpy(a / np.linalg.norm(a) * math.radians(deg))).numpy()


# ------------------------------------------------------------------ intrinsics
def test_intrinsics_file_is_scaled_to_the_video_and_the_decode_size(tmp_path: Path) -> None:
    f = tmp_path / "cam.json"
    f.write_text(json.dumps({"fx": 1000.0, "fy": 1010.0, "cx": 960.0, "cy": 500.0, "width": 1920, "height": 1080}))
    cam = user_intrinsics(CameraConfig(intrinsics=str(f)), 1280, 720)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((1000 * 2 / 3, 1010 * 2 / 3, 640.0, 500 * 2 / 3))
    dec = cam.scaled(640, 360)  # decode.max_side halves the frames
    assert (dec.fx, dec.cx, dec.cy) == pytest.approx((1000 / 3, 320.0, 500 / 3))
    assert cam.source == f"file:{f}"
    # config values: fy and the principal point default
    c = user_intrinsics(CameraConfig(fx=800.0), 640, 480)
    assert (c.fx, c.fy, c.cx, c.cy) == (800.0, 800.0, 320.0, 240.0)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"fx": -5}, "fx must be positive"),
        ({"fx": 800, "cx": 5000}, "outside the 640x480 image"),
        ({"fx": 800, "width": 1920, "height": 1080}, "another aspect ratio"),
        ({"fx": 0.5}, "field of view"),
        ({"fx": "wide"}, "must be a finite number"),
        ({"fy": 800}, "fx is missing"),
        ({"fx": 800, "k1": 0.1}, "unknown keys"),
    ],
)
def test_bad_intrinsics_are_one_line_errors_naming_file_and_value(tmp_path: Path, content: dict, message: str) -> None:
    f = tmp_path / "cam.json"
    f.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message) as err:
        user_intrinsics(CameraConfig(intrinsics=str(f)), 640, 480)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_missing_intrinsics_file_is_refused_when_the_config_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.json: file not found"):
        load_config("clip", [f"camera.intrinsics={tmp_path / 'nope.json'}"])
    with pytest.raises(ConfigError, match="fx"):
        load_config("clip", ["camera.fx=0"])


# --------------------------------------------------------------- working -> final
def test_moving_rows_to_another_camera_keeps_their_pixel_and_scales_depth() -> None:
    working = {"focal_px": 800.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}
    cam = centred(500.0, 640, 480, "test")
    cam = type(cam)(500.0, 500.0, 300.0, 250.0, 640, 480, "test")  # principal point off centre
    t = np.array([[0.5, -0.2, 6.0], [-1.0, 0.4, 4.0]], np.float32)
    rot = np.broadcast_to(np.eye(3, dtype=np.float32), (2, 24, 3, 3)).copy()
    rot[:, 0] = rotation_z_to(torch.from_numpy(t.astype(np.float64))).numpy()  # facing along its ray
    r2, t2 = to_camera(rot, t, working, cam)
    pix_w = 800 * t[:, :2] / t[:, 2:] + [320, 240]
    pix_f = 500 * t2[:, :2] / t2[:, 2:] + [300, 250]
    np.testing.assert_allclose(pix_f, pix_w, atol=1e-3)
    np.testing.assert_allclose(t2[:, 2], t[:, 2] * 500 / 800, rtol=1e-6)
    # a body seen straight along its viewing ray still is after the move
    ray2 = t2 / np.linalg.norm(t2, axis=1, keepdims=True)
    np.testing.assert_allclose(r2[:, 0] @ np.array([0.0, 0.0, 1.0]), ray2, atol=1e-5)
    np.testing.assert_array_equal(r2[:, 1:], rot[:, 1:])


# ------------------------------------------------------------------ camera motion
def test_rotations_are_recovered_from_homographies_of_a_rotating_camera() -> None:
    f = 1.2  # focal in image heights
    K = np.diag([f, f, 1.0])
    truth = [np.eye(3)]
    steps = [_rot((0, 1, 0), 1.5), _rot((1, 0.2, 0), -0.8), _rot((0, 1, 0.1), 2.0)]
    H = [np.eye(3)]
    for r in steps:
        truth.append(r @ truth[-1])
        h = K @ r @ np.linalg.inv(K)
        H.append(h / h[2, 2] * 3.0)  # homographies are only known up to scale
    R = rotations_from_homographies(np.stack(H), f)
    np.testing.assert_allclose(R, np.stack(truth), atol=1e-9)


def _background_frames(yaw_deg: list[float], size: tuple[int, int] = (320, 240)) -> tuple[np.ndarray, float]:
    from hmrflow.jobs.synth.backgrounds import render_backgrounds, sample_backgrounds
    from hmrflow.jobs.synth.camera import intrinsics, look_at

    w, h = size
    K = intrinsics(w, h, 55.0)
    bank = sample_backgrounds(np.random.default_rng(3), 1, wall_radius=(8.0, 8.0))
    Rs, ts = [], []
    base_R, base_t = look_at(np.array([0.0, 1.5, 0.0]), np.array([0.0, 1.0, 5.0]))
    for yaw in yaw_deg:
        R = _rot((0, 1, 0), yaw).T  # turning the camera about the world's vertical
        Rs.append(base_R @ R)
        ts.append(base_t)
    img = render_backgrounds(
        bank, torch.tensor(K).float(), torch.tensor(np.stack(Rs)).float(), torch.tensor(np.stack(ts)).float(), h, w
    )
    return (img.numpy() * 255).round().astype(np.uint8), float(K[1, 1] / h)


def test_motion_tracker_recovers_a_pan_and_takes_the_fast_path_when_still() -> None:
    yaws = [0.0, 0.0, 0.6, 1.2, 1.8, 2.4]
    frames, f_rel = _background_frames(yaws)
    tr = MotionTracker(max_side=320)
    person = np.array([[100.0, 60.0, 160.0, 200.0]])  # a person's box is never tracked
    for i, img in enumerate(frames):
        tr.add(i, i / 30, img, person)
    res = tr.result()
    assert res["status"][:2] == [0, 1] and all(s == 2 for s in res["status"][2:])
    R = rotations_from_homographies(np.asarray(res["H"]).reshape(-1, 3, 3), f_rel)
    turned = [math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1))) for r in R]
    np.testing.assert_allclose(turned, yaws, atol=0.1)


# ------------------------------------------------------------------ ground
def _standing_people(up: np.ndarray, height: float, spread: float, n: int, rng) -> np.ndarray:
    """(n, 24, 3) skeleton-like joints standing on the plane up . x = -height."""
    e1 = np.cross(up, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    j = np.zeros((n, 24, 3))
    for i in range(n):
        ahead = np.array([0.0, 0.0, 5.0]) - 5.0 * up[2] * up  # 5 m in front, along the ground
        base = -height * up + spread * (rng.uniform(-1, 1) * e1 + rng.uniform(-1, 1) * e2) + ahead
        j[i] = base + 0.9 * up  # everything at hip height ...
        j[i, 12] = base + 1.45 * up  # neck
        for k, lift in zip((7, 8, 10, 11), (0.08, 0.08 + 0.1 * (i % 2), 0.03, 0.03 + 0.1 * (i % 2))):
            j[i, k] = base + lift * up + 0.1 * e1 * (k % 2)
    return j


def test_ground_plane_from_foot_contacts_gives_gravity_and_camera_height() -> None:
    rng = np.random.default_rng(0)
    up = _rot((1, 0, 0), -12.0) @ np.array([0.0, -1.0, 0.0])  # camera pitched down by 12 degrees
    joints = _standing_people(up, 1.6, spread=3.0, n=200, rng=rng)
    fit = fit_ground(joints, sole_offset=0.03)
    assert fit.source == "plane"
    assert math.degrees(math.acos(min(1.0, float(fit.up @ up)))) < 0.5
    assert fit.height == pytest.approx(1.6, abs=0.01)
    R, o = world_from_camera(fit.up, fit.height)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    feet = R @ (joints[0, 10] - o)
    assert feet[1] == pytest.approx(0.03, abs=0.01)  # foot joint 3 cm above the ground


def test_one_person_in_place_falls_back_to_the_body_up() -> None:
    rng = np.random.default_rng(1)
    up = np.array([0.0, -1.0, 0.0])
    joints = _standing_people(up, 1.2, spread=0.02, n=50, rng=rng)
    fit = fit_ground(joints)
    assert fit.source == "body" and math.degrees(math.acos(min(1.0, float(fit.up @ up)))) < 0.5


# ------------------------------------------------------------------ world stage
def test_world_stage_moves_whole_bodies_rigidly_into_the_world_frame() -> None:
    """FK of the world columns equals the camera-frame body moved by the recorded rigid
    transform, which checks the root-joint bookkeeping of SMPL translations."""
    from hmrflow.priors.body_model import load_body_model

    rng = np.random.default_rng(2)
    T = 40
    rot = axis_angle_to_matrix(torch.from_numpy(rng.normal(0, 0.2, (T, 24, 3)))).float().numpy()
    rot[:, 0] = _rot((1, 0, 0), 180.0)  # upright in the OpenCV camera (y down)
    transl = np.stack([np.linspace(-1, 1, T), np.full(T, 0.3), np.linspace(5, 6, T)], 1).astype(np.float32)
    betas = rng.normal(0, 0.5, 10).astype(np.float32)
    seq = SMPLSequence(
        video_id="v",
        track_id=0,
        betas=betas,
        frame_idx=np.arange(T),
        pts=np.arange(T) / 30.0,
        observed=np.ones(T, bool),
        rotmats=rot,
        transl=transl,
        confidence=np.ones(T, np.float32),
    )
    working = {"focal_px": 600.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}
    stage = WorldStage(CameraConfig(fov="diagonal", motion="static", depth_smooth_s=0.0))
    res = stage((([seq]), working, ClipRef("v", "v.mp4", 30.0, T, 0, 640, 480)))
    out = res.sequences[0]
    assert res.record["intrinsics"]["source"] == "diagonal" and res.record["world"]["camera_motion"] == "static"
    body = load_body_model("synthetic")
    with torch.no_grad():
        cam_j = body.forward(
            torch.from_numpy(out.rotmats), torch.from_numpy(np.tile(betas, (T, 1))), torch.from_numpy(out.transl)
        ).joints.numpy()
        wrot = out.rotmats.copy()
        wrot[:, 0] = out.world_rotmat
        w_j = body.forward(
            torch.from_numpy(wrot), torch.from_numpy(np.tile(betas, (T, 1))), torch.from_numpy(out.world_transl)
        ).joints.numpy()
    Rw = np.asarray(res.record["world"]["world_from_first_camera"]["R"])
    o = np.asarray(res.record["world"]["world_from_first_camera"]["origin_in_camera"])
    np.testing.assert_allclose(w_j, (cam_j - o) @ Rw.T, atol=2e-4)
    # the stage's joints-only kinematics equals the body model's joints
    rest = stage._rest(betas)
    np.testing.assert_allclose(stage._joints(out.rotmats, out.transl, rest), cam_j, atol=2e-5)
    # depth scaled from the working focal (600) to the diagonal's (800)
    np.testing.assert_allclose(out.transl[:, 2], transl[:, 2] * 800 / 600, rtol=1e-5)
    # y is up: the heads are above the pelvis in the world frame
    assert np.all(w_j[:, 15, 1] > w_j[:, 0, 1])


# ------------------------------------------------------------------ field of view
def _network_answers(
    vfov: float, pitch_deg: float, seeds: tuple[int, ...] = (5, 6, 7, 8, 9, 10)
) -> tuple[float, np.ndarray]:
    """The bundled camera network's clip answer (vfov degrees, mean up) on fresh renders of the
    kind it was trained on (the ``mixed`` scenes), seeds outside its training stream."""
    import dataclasses

    from hmrflow.jobs.synth.clip import load_body_assets
    from hmrflow.jobs.synth.scene import sample_scene
    from hmrflow.jobs.train.synth_frames import render_scene_frames, scene_spec_for
    from hmrflow.stages.camera.fov import (
        aggregate_focal_rel,
        load_fov,
        predict_camera,
        resize_for_fov,
        vfov_from_focal_rel,
    )

    model = load_fov()
    body = load_body_assets("synthetic")
    focal, ups = [], []
    tilt = _rot((1, 0, 0), -pitch_deg)  # as the training data's tilt: positive pitch turns the camera up
    for seed in seeds:
        spec = scene_spec_for("mixed", np.random.default_rng(seed), 90_000 + seed, 320, 240)
        spec = dataclasses.replace(spec, vfov_deg=(vfov, vfov))
        scene = sample_scene(spec)
        scene = dataclasses.replace(
            scene, cam_R=np.einsum("ij,fjk->fik", tilt, scene.cam_R), cam_t=scene.cam_t @ tilt.T
        )
        fr = render_scene_frames(spec, np.array([0, 5]), body, scene=scene)
        f, u = predict_camera(model, np.stack([resize_for_fov(i) for i in fr.images]), 320 / 240)
        focal.append(f)
        ups.append(u)
    up = np.concatenate(ups).mean(0)
    return float(vfov_from_focal_rel(aggregate_focal_rel(np.concatenate(focal)))), up / np.linalg.norm(up)


def test_bundled_camera_network_tells_narrow_from_wide_and_level_from_tilted() -> None:
    narrow, _ = _network_answers(35.0, 0.0)
    wide, _ = _network_answers(80.0, 0.0)
    assert narrow < wide - 15.0, (narrow, wide)
    _, up_level = _network_answers(55.0, 0.0)
    _, up_raised = _network_answers(55.0, 20.0)  # the same scenes, the camera turned 20 degrees up
    down = lambda u: math.degrees(math.asin(-u[2]))  # noqa: E731  (how far the camera looks down: up leans toward it)
    assert abs(down(up_raised) - down(up_level) + 20.0) < 6.0, (down(up_level), down(up_raised))


def test_depth_smoothing_keeps_each_rows_pixel_and_removes_depth_noise() -> None:
    rng = np.random.default_rng(4)
    T = 90
    true = np.stack([np.linspace(-1, 1, T), np.full(T, 0.5), np.linspace(4, 6, T)], 1)
    noisy = true * (1 + rng.normal(0, 0.08, T))[:, None]  # depth from apparent size: noise along the ray
    frames = np.r_[np.arange(45), np.arange(50, 95)]  # a gap splits the runs
    err_before = np.abs(noisy[:, 2] - true[:, 2]).mean()
    for kind in ("savgol", "gaussian"):
        out = smooth_depth(noisy, frames, 36.0, kind)
        np.testing.assert_allclose(out[:, :2] / out[:, 2:], noisy[:, :2] / noisy[:, 2:], rtol=1e-5)  # same pixel
        assert np.abs(out[:, 2] - true[:, 2]).mean() < 0.5 * err_before, kind
    np.testing.assert_allclose(smooth_depth(noisy, frames, 0.0), noisy, rtol=1e-6)
    # a walk straight toward the camera (log distance linear in time) stays exactly as it is, ends included
    walk = np.stack([np.full(T, 0.3), np.full(T, 0.2), np.exp(np.linspace(np.log(8), np.log(3), T))], 1)
    np.testing.assert_allclose(smooth_depth(walk, np.arange(T), 36.0, "savgol"), walk, rtol=1e-4)


def test_run_refuses_contradicting_intrinsics_before_decoding(tmp_path: Path, monkeypatch, capsys) -> None:
    from hmrflow.jobs.cli import main
    from hmrflow.stages.decode import DecodeStage
    from tests.videos import make_video

    video = make_video(tmp_path / "clip.mp4", n_frames=4, size=(64, 48)).path
    cam = tmp_path / "cam.yaml"
    cam.write_text("fx: 1000\nwidth: 1920\nheight: 1080\n")

    def never(self, clip):  # noqa: ANN001
        raise AssertionError("decoding started")

    monkeypatch.setattr(DecodeStage, "__call__", never)
    code = main(["run", str(video), "-o", str(tmp_path / "out"), "--set", f"camera.intrinsics={cam}"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("hmrflow run: error:") and "Traceback" not in lines[0]
    assert str(cam) in lines[0] and "1920x1080" in lines[0] and "64x48" in lines[0]
    assert not (tmp_path / "out" / "clip").exists()


def test_each_track_is_slid_along_its_rays_onto_the_common_ground() -> None:
    rng = np.random.default_rng(6)
    up = np.array([0.0, -1.0, 0.0])
    near = _standing_people(up, 1.6, spread=2.0, n=80, rng=rng)
    far = _standing_people(up, 1.6, spread=2.0, n=60, rng=rng) * 1.3  # depth overestimated by 30 %
    stage = WorldStage(CameraConfig())
    stage.setup()
    fit = fit_ground(np.concatenate([near, far]), stage._sole, prior_up=up)
    k_near, k_far = stage._ground_scales([near, far], fit)
    assert k_far / k_near == pytest.approx(1 / 1.3, rel=0.02)  # both now stand on one plane
    assert stage._ground_scales([near], fit) == [1.0]  # one person defines the plane: nothing to correct
