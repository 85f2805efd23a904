"""Overlay video: right frame count and timestamps, people drawn where they project, views, skeleton mode."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from hmrflow.jobs.report.colors import track_color
from hmrflow.jobs.report.overlay import OverlayOptions, intrinsics, render_overlay
from hmrflow.pipeline.config import WriteConfig
from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.types import ClipRef, SMPLSequence
from hmrflow.priors.body_model import load_body_model
from hmrflow.stages.write import WriteStage
from tests.videos import make_video

W, H, N, FPS, FOCAL = 160, 120, 10, 25.0, 150.0


def read_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as c:
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in c.decode(video=0)]
    return np.stack([f for f, _ in frames]), np.array([t for _, t in frames])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("overlay")
    clip = root / "clip.mp4"
    make_video(clip, n_frames=N, size=(W, H), fps=FPS, pattern="index")
    upright = np.diag([1.0, -1.0, -1.0]).astype(np.float32)
    seqs = []
    for tid, x, frames in ((1, -0.6, np.arange(0, N)), (5, 0.7, np.arange(3, 8))):
        t = len(frames)
        rot = np.tile(np.eye(3, dtype=np.float32), (t, 24, 1, 1))
        rot[:, 0] = upright
        seqs.append(
            SMPLSequence(
                video_id="clip",
                track_id=tid,
                betas=np.zeros(10, np.float32),
                frame_idx=frames,
                pts=frames / FPS,
                observed=np.ones(t, bool),
                rotmats=rot,
                transl=np.tile(np.array([x, 0.0, 4.0], np.float32), (t, 1)),
                confidence=np.ones(t, np.float32),
            )
        )
    cref = ClipRef(video_id="clip", path=str(clip), fps=FPS, n_frames=N, width=W, height=H)
    out = WriteStage(WriteConfig(), root / "out")(VideoResult(clip=cref, sequences=seqs, config={}))
    bm = load_body_model("synthetic")
    return root, clip, out, bm


def pelvis_pixel(bm, x: float) -> tuple[int, int]:
    rot = torch.eye(3).repeat(1, 24, 1, 1)
    rot[:, 0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    with torch.no_grad():
        j = bm(rot, torch.zeros(1, 10), torch.tensor([[x, 0.0, 4.0]])).joints[0, 0].numpy()
    K = intrinsics(W, H, FOCAL)
    return int(round(K[0, 0] * j[0] / j[2] + K[0, 2])), int(round(K[1, 1] * j[1] / j[2] + K[1, 2]))


def test_mesh_overlay(scene, tmp_path: Path) -> None:
    root, clip, out, bm = scene
    dest = render_overlay(out, clip, tmp_path / "o.mp4", bm, OverlayOptions(focal=FOCAL), progress=False)
    got, times = read_frames(dest)
    src, src_times = read_frames(clip)
    assert got.shape == (N, H, W, 3)
    np.testing.assert_allclose(times, src_times, atol=1e-3)
    u, v = pelvis_pixel(bm, -0.6)
    patch = (slice(v - 1, v + 2), slice(u - 1, u + 2))
    for f in range(N):
        diff = np.abs(got[f][patch].astype(int) - src[f][patch].astype(int)).mean()
        assert diff > 25, (f, diff)
        # the mesh pixel carries the track's hue: its strongest channel is the colour's
        assert np.argmax(got[f][patch].reshape(-1, 3).mean(0)) == np.argmax(track_color(1))
    # track 5 is drawn only in its frames 3..7
    u5, v5 = pelvis_pixel(bm, 0.7)
    d5 = [
        np.abs(
            got[f, v5 - 1 : v5 + 2, u5 - 1 : u5 + 2].astype(int) - src[f, v5 - 1 : v5 + 2, u5 - 1 : u5 + 2].astype(int)
        ).mean()
        for f in range(N)
    ]
    assert all(d5[f] > 25 for f in range(3, 8)), d5
    assert all(d5[f] < 8 for f in (0, 1, 8, 9)), d5
    # far from the people the frame is unchanged (up to compression)
    assert np.abs(got[:, :, -6:].astype(int) - src[:, :, -6:].astype(int)).mean() < 6


def test_skeleton_and_side_view(scene, tmp_path: Path) -> None:
    root, clip, out, bm = scene
    dest = render_overlay(
        out,
        clip,
        tmp_path / "s.mp4",
        bm,
        OverlayOptions(focal=FOCAL, mode="skeleton", view="side-by-side", labels=False),
        progress=False,
    )
    got, _ = read_frames(dest)
    src, _ = read_frames(clip)
    assert got.shape == (N, H, 2 * W, 3)
    u, v = pelvis_pixel(bm, -0.6)
    assert (
        np.abs(
            got[0, v - 1 : v + 2, u - 1 : u + 2].astype(int) - src[0, v - 1 : v + 2, u - 1 : u + 2].astype(int)
        ).mean()
        > 25
    )
    panel = got[:, :, W:].astype(int)
    bg = np.abs(panel - np.array([48, 48, 52])).sum(-1) > 40
    assert bg[0].sum() > 30  # the person is drawn in the side panel
    assert bg[0].sum() < 0.3 * H * W


def test_cli_render_top_view(scene, tmp_path: Path) -> None:
    from hmrflow.jobs.cli import main

    root, clip, out, _ = scene
    dest = tmp_path / "t.mp4"
    assert (
        main(["render", str(out), "--video", str(clip), "-o", str(dest), "--view", "top", "--focal", str(FOCAL)]) == 0
    )
    got, _ = read_frames(dest)
    assert got.shape == (N, H, 2 * W, 3)
    assert main(["render", str(root / "nope"), "--video", str(clip)]) == 2


def test_intrinsics_follow_the_recorded_camera_unless_overridden() -> None:
    """The manifest's camera (decoded at half size here) is rescaled to the clip; --focal wins."""
    rec = {"model": "pinhole", "focal_px": 400.0, "cx": 160.0, "cy": 120.0, "width": 320, "height": 240}
    K = intrinsics(640, 480, None, rec)
    np.testing.assert_allclose(K, [[800.0, 0, 320.0], [0, 800.0, 240.0], [0, 0, 1]])
    np.testing.assert_allclose(intrinsics(640, 480, 500.0, rec)[0, 0], 500.0)
    np.testing.assert_allclose(intrinsics(640, 480)[0, 0], 5000.0 / 256.0 * 640)


def test_world_map_panel_marks_each_person_where_the_world_columns_put_them() -> None:
    from hmrflow.jobs.export.reading import TrackData
    from hmrflow.jobs.report.colors import track_color
    from hmrflow.jobs.report.overlay import PANEL_BACKGROUND, WorldMap
    from hmrflow.pipeline.errors import HmrflowError

    def track(tid: int, path: np.ndarray, frames: np.ndarray, world: bool = True) -> TrackData:
        t = len(frames)
        return TrackData(
            track_id=tid,
            frame_idx=frames,
            pts=frames / FPS,
            poses=np.zeros((t, 72), np.float32),
            transl=np.zeros((t, 3), np.float32),
            betas=np.zeros(10, np.float32),
            observed=np.ones(t, bool),
            confidence=np.ones(t, np.float32),
            world_orient=np.zeros((t, 3), np.float32) if world else None,
            world_transl=path.astype(np.float32) if world else None,
        )

    walk = np.stack([np.linspace(2, -2, 20), np.zeros(20), np.full(20, 5.0)], 1)  # camera-left to right, 5 m ahead
    stand = np.tile([0.0, 0.0, 2.0], (10, 1))
    m = WorldMap.build([track(1, walk, np.arange(20)), track(4, stand, np.arange(10, 20))], 200, 200)
    img = m.draw(0)
    x, y = m.paths[0][2][0]
    assert tuple(img[int(round(y)), int(round(x))]) == tuple(track_color(1))  # walker's dot at its start
    assert x < 100 and y < m.camera_px[1]  # +x (camera left) on the left; ahead of the camera is up the page
    far = m.paths[1][2][0]
    assert tuple(img[int(round(far[1])), int(round(far[0]))]) != tuple(track_color(4))  # not there yet at frame 0
    assert tuple(m.draw(12)[int(round(far[1])), int(round(far[0]))]) == tuple(track_color(4))
    assert tuple(img[2, 2]) == PANEL_BACKGROUND
    with pytest.raises(HmrflowError, match="world-frame"):
        WorldMap.build([track(1, walk, np.arange(20), world=False)], 200, 200)
