"""Gait figures (jobs/report/gait.py) against synthetic walkers with exact ground truth.

The walker's speed is set by hand; its true cadence comes from the gait engine's own rule
(step length ``L0 * sqrt(v / v0)`` at the reference body size, cadence ``60 v / L``), not
from the joints, so a wrong step detector cannot agree with it by construction.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.export.reading import TrackData, VideoOutput, load_video_output
from hmrflow.jobs.report import gait as gm
from hmrflow.jobs.report import html as rep
from hmrflow.priors.body_model import load_body_model
from hmrflow.priors.motions.gait import WALK

FPS = 30.0


def true_cadence(speed: float) -> float:
    """Steps per minute of the motion library's walk at ``speed`` m/s (reference body size)."""
    return 60.0 * speed / (WALK.step0 * np.sqrt(speed / WALK.v0))


def walking_scene(speed: float, seconds: float = 5.0, seed: int = 4, idle: bool = False):
    """A one-person scene: a straight lateral walk at ``speed`` m/s across the view (or, with
    ``idle``, in-place motions), static camera."""
    from hmrflow.jobs.synth.scene import IN_PLACE_MOTIONS, SceneSpec, sample_scene
    from hmrflow.priors import motion_library as ml

    spec = SceneSpec(name="walk", seed=seed, people=1, walkers=1.0, seconds=seconds, fps=FPS, height_frac=(0.45, 0.55))
    scene = sample_scene(spec)
    person = scene.people[0]
    depth = float(np.median(person.trans[:, 2]))
    rng = np.random.default_rng(seed)
    if idle:
        names = [n for n in IN_PLACE_MOTIONS if n in ml.MOTIONS and n != "turn"]
        m = ml.compose_motion(rng, seconds, FPS, names=names, direction=0.0, start_xz=(0.0, depth))
    else:
        x0 = -0.5 * speed * seconds
        m = ml.random_path_motion(
            rng, seconds, FPS, (x0, depth), (x0 + speed * seconds + 2.0, depth), speed=speed, on_arrival="continue"
        )
    n = spec.n_frames
    poses, trans = m.poses[:n].astype(np.float32), m.trans[:n].astype(np.float32)
    assert len(poses) == n
    return dataclasses.replace(scene, people=[dataclasses.replace(person, poses=poses, trans=trans)])


def gt_track(scene) -> TrackData:
    """The scene's person as an output track: camera-frame and world-frame ground truth."""
    from hmrflow.jobs.synth.clip import load_body_assets, place_people

    gt = place_people(scene, load_body_assets("synthetic"))
    n = scene.spec.n_frames
    return TrackData(
        track_id=0,
        frame_idx=np.arange(n, dtype=np.int64),
        pts=np.arange(n) / FPS,
        poses=gt.poses[:, 0],
        transl=gt.transl[:, 0],
        betas=gt.betas[0],
        observed=np.ones(n, bool),
        confidence=np.ones(n, np.float32),
        world_orient=gt.world_poses[:, 0, :3],
        world_transl=gt.world_transl[:, 0],
    )


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("synthetic")


@pytest.mark.parametrize("speed", [0.9, 1.4])
def test_gait_of_ground_truth_walker(speed: float, body_model) -> None:
    track = gt_track(walking_scene(speed))
    g = gm.gait_of_track(track, body_model)
    assert g.walking and g.frame == "world" and g.note == ""
    assert g.speed_m_s == pytest.approx(speed, rel=0.03)
    assert g.cadence_steps_min == pytest.approx(true_cadence(speed), rel=0.04)
    assert g.step_time_s == pytest.approx(60.0 / true_cadence(speed), rel=0.04)
    # feet alternate, and every step of the 5 s is found (first and last may fall at the edges)
    assert all(a != b for a, b in zip(g.step_sides, g.step_sides[1:]))
    expected = 5.0 * true_cadence(speed) / 60.0
    assert expected - 2 <= g.n_steps <= expected + 1


def test_gaps_split_bouts_and_camera_fallback(body_model) -> None:
    speed = 1.2
    track = gt_track(walking_scene(speed))
    from hmrflow.jobs.report.html import _rows

    keep = np.zeros(len(track.frame_idx), bool)
    keep[np.r_[0:60, 80:150]] = True  # a 20-frame hole
    holed = _rows(track, keep)
    g = gm.gait_of_track(holed, body_model)
    assert [(int(holed.frame_idx[a]), int(holed.frame_idx[b - 1])) for a, b in g.bouts] == [(0, 59), (80, 149)]
    assert g.speed_m_s == pytest.approx(speed, rel=0.03)
    assert g.cadence_steps_min == pytest.approx(true_cadence(speed), rel=0.05)
    # without the world columns: camera frame, said so; the camera is static, so speed holds
    cam = gm.gait_of_track(dataclasses.replace(track, world_orient=None, world_transl=None), body_model)
    assert cam.frame == "camera" and "camera frame" in cam.note
    assert cam.speed_m_s == pytest.approx(speed, rel=0.05)
    assert cam.cadence_steps_min == pytest.approx(true_cadence(speed), rel=0.05)


def test_standing_person_is_not_walking(body_model) -> None:
    g = gm.gait_of_track(gt_track(walking_scene(0.0, idle=True)), body_model)
    assert not g.walking and g.n_steps == 0 and not np.isfinite(g.cadence_steps_min)
    # a walk slower than the threshold is not walking either
    slow = gm.gait_of_track(gt_track(walking_scene(0.2)), body_model)
    assert not slow.walking and slow.bouts == ()


def test_report_states_the_gait_figures(body_model) -> None:
    speed = 1.2
    video = VideoOutput("walk", Path("."), [gt_track(walking_scene(speed))], {"input": {"fps": FPS, "n_frames": 150}})
    reports = rep.analyse_video(video, body_model)
    text = rep.render_html(video, reports)
    pattern = r"cadence (\d+) steps/min, mean step time ([\d.]+) s, walking speed ([\d.]+) m/s"
    # the track's section and the PNG's line say it in words, the table in its two columns
    for said in (text, rep.png_lines(reports[0])[1]):
        m = re.search(pattern, said)
        assert m is not None
        cad, step, v = float(m.group(1)), float(m.group(2)), float(m.group(3))
        assert cad == pytest.approx(true_cadence(speed), rel=0.04)
        assert step == pytest.approx(60.0 / true_cadence(speed), rel=0.04)
        assert v == pytest.approx(speed, rel=0.03)
    row = re.search(r"<td>(\d+)</td><td>([\d.]+)</td></tr>", text)
    assert row is not None
    assert float(row.group(1)) == pytest.approx(true_cadence(speed), rel=0.04)
    assert float(row.group(2)) == pytest.approx(speed, rel=0.03)


@pytest.mark.slow
def test_gait_on_the_pipelines_output_of_a_rendered_walk(tmp_path: Path, body_model) -> None:
    """Render the walk, run the whole pipeline on it (CPU), and measure gait on its output."""
    from hmrflow.jobs.cli import main
    from hmrflow.jobs.synth.clip import load_body_assets, render_scene

    speed = 1.2
    clip = render_scene(walking_scene(speed), tmp_path / "clips", load_body_assets("synthetic"), progress=False)
    assert main(["run", str(clip / "walk.mp4"), "-o", str(tmp_path / "out")]) == 0
    video = load_video_output(tmp_path / "out" / "walk")
    longest = max(video.tracks, key=len)
    assert longest.has_world
    g = gm.gait_of_track(longest, body_model)
    assert g.walking and g.frame == "world"
    assert g.speed_m_s == pytest.approx(speed, rel=0.15)
    assert g.cadence_steps_min == pytest.approx(true_cadence(speed), rel=0.10)
