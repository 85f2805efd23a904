"""Refine stage: windows and blending, gap filling, short tracks, determinism, and the bundled
prior's effect on a noisy synthetic track (acceleration error, no seams at window borders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.pipeline.config import RefineConfig
from hmrflow.pipeline.types import SMPLSequence
from hmrflow.priors.motion_diffusion import BUNDLED_PRIOR
from hmrflow.priors.motion_diffusion.denoiser import MotionDenoiser
from hmrflow.stages.refine.stage import RefineStage, fill_gaps
from hmrflow.stages.refine.windows import blend_weights, plan_windows, stitch


@pytest.mark.parametrize(
    "n,window,overlap",
    [(1, 64, 16), (30, 64, 16), (64, 64, 16), (65, 64, 16), (200, 64, 16), (1000, 64, 16), (97, 32, 0), (500, 48, 24)],
)
def test_windows_cover_and_weights_sum_to_one(n, window, overlap):
    starts = plan_windows(n, window, overlap)
    w = blend_weights(starts, n, window, overlap)
    covered = np.zeros(n, int)
    total = np.zeros(n)
    for j, s in enumerate(starts):
        covered[s : s + w.shape[1]] += 1
        total[s : s + w.shape[1]] += w[j]
    assert covered.min() >= 1 and np.allclose(total, 1.0)
    assert np.all(np.diff(starts) > 0) and starts[-1] + min(window, n) == n
    if n > window:
        assert np.all(np.diff(starts)[:-1] == window - overlap)
    # stitching a constant gives the constant; a linear ramp seen by every window is kept
    vals = np.stack([np.arange(s, s + w.shape[1], dtype=float) for s in starts])[..., None]
    assert np.allclose(stitch(vals, starts, w, n)[:, 0], np.arange(n))


def _seq(frame_idx, pts, track_id=3, n_obs=None) -> SMPLSequence:
    n = len(frame_idx)
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(rng.normal(0, 0.2, (n * 24, 3))).as_matrix().reshape(n, 24, 3, 3).astype(np.float32)
    tr = np.tile(np.array([0.0, 0.2, 4.0], np.float32), (n, 1)) + np.linspace(0, 1, n)[:, None].astype(np.float32)
    return SMPLSequence(
        video_id="v",
        track_id=track_id,
        betas=np.arange(10, dtype=np.float32) / 10,
        frame_idx=np.asarray(frame_idx, np.int64),
        pts=np.asarray(pts, np.float64),
        observed=np.ones(n, bool),
        rotmats=rot,
        transl=tr,
        confidence=np.full(n, 0.9, np.float32),
    )


def test_fill_gaps_places_frames_on_the_grid():
    # every 2nd source frame at 60 fps (step 2, 1/30 s); a 10-frame hole (0.3 s) and a 2 s hole
    fi = np.r_[np.arange(0, 40, 2), np.arange(60, 100, 2), np.arange(220, 260, 2)]
    pts = fi / 60.0 + 0.5
    f = fill_gaps(_seq(fi, pts), max_gap_s=1.0)
    new = f.frame_idx[~f.observed]
    assert np.array_equal(new, np.arange(40, 60, 2))  # short hole filled on the step-2 grid
    assert np.allclose(f.pts[~f.observed], new / 60.0 + 0.5)
    assert np.all(np.diff(f.frame_idx) > 0)
    assert not np.any((f.frame_idx > 98) & (f.frame_idx < 220))  # long hole left alone
    assert list(np.unique(f.segment)) == [0, 1] and np.all(f.segment[f.frame_idx >= 220] == 1)
    assert np.all(f.confidence[~f.observed] == 0)
    # placeholder translation interpolates the neighbours
    i = int(np.flatnonzero(f.frame_idx == 50)[0])
    a, b = f.transl[np.flatnonzero(f.frame_idx == 38)[0]], f.transl[np.flatnonzero(f.frame_idx == 60)[0]]
    assert np.allclose(f.transl[i], a + (b - a) * (50 - 38) / (60 - 38), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    torch.manual_seed(0)
    m = MotionDenoiser(d_model=16, n_layers=1, n_heads=2, ff_mult=2, window=16)
    torch.nn.init.normal_(m.out_proj.weight, std=0.05)  # non-zero correction: noise matters
    folder = tmp_path_factory.mktemp("prior")
    m.save_pretrained(folder)
    return str(folder)


def test_stage_short_track_gap_and_determinism(tiny_prior):
    cfg = RefineConfig(weights=tiny_prior, window=16, overlap=4, steps=3, device="cpu")
    fi = np.r_[np.arange(0, 5), np.arange(9, 12)]  # 8 frames < window, a 3-frame hole
    seq = _seq(fi, fi / 30.0)
    stage = RefineStage(cfg)
    stage.setup()
    out = stage(seq)
    assert np.array_equal(out.frame_idx, np.arange(12))
    assert np.array_equal(out.observed, ~np.isin(np.arange(12), [5, 6, 7, 8]))
    assert np.allclose(out.pts, np.arange(12) / 30.0)
    assert np.array_equal(out.betas, seq.betas) and out.track_id == 3
    assert np.allclose(np.linalg.det(out.rotmats), 1.0, atol=1e-4)
    again = RefineStage(cfg)(seq)
    assert again == out
    other = RefineStage(cfg, seed=1)(seq)
    assert not np.array_equal(other.transl, out.transl)
    # a long track goes through several batched windows; batching does not change the result
    fi = np.arange(100)
    long = _seq(fi, fi / 30.0)
    a = RefineStage(RefineConfig(weights=tiny_prior, window=16, overlap=4, steps=2, device="cpu"))(long)
    b = RefineStage(RefineConfig(weights=tiny_prior, window=16, overlap=4, steps=2, device="cpu", batch_windows=2))(
        long
    )
    assert np.allclose(a.transl, b.transl, atol=1e-5) and np.allclose(a.rotmats, b.rotmats, atol=1e-5)


def test_disabled_stage_only_fills(tiny_prior):
    fi = np.r_[np.arange(0, 5), np.arange(8, 12)]
    seq = _seq(fi, fi / 30.0)
    out = RefineStage(RefineConfig(enabled=False))(seq)
    assert len(out) == 12 and np.array_equal(out.rotmats[out.observed], seq.rotmats)


needs_bundle = pytest.mark.skipif(not (BUNDLED_PRIOR / "config.json").is_file(), reason="no bundled prior")


@pytest.fixture(scope="module")
def refined_track():
    from hmrflow.jobs.bench.refine_eval import _joints, make_tracks
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.priors.motion_diffusion.noise_model import NoiseConfig

    torch.set_num_threads(1)
    # no gaps here: the acceleration comparison needs every frame
    tr = make_tracks(1, 12.0, noise=NoiseConfig(gap_rate_hz=0.0, drop_prob=0.0), seed=300_000)[0]
    n = len(tr["rot"])
    fi = np.arange(n)
    seq = SMPLSequence(
        video_id="v",
        track_id=0,
        betas=np.zeros(10, np.float32),
        frame_idx=fi,
        pts=fi / 30.0,
        observed=np.ones(n, bool),
        rotmats=tr["rot"],
        transl=tr["transl"],
        confidence=tr["confidence"],
    )
    cfg = RefineConfig(device="cpu")
    out = RefineStage(cfg)(seq)
    bm = load_body_model("synthetic")
    return dict(
        cfg=cfg,
        gt=_joints(bm, tr["gt_rot"], tr["gt_transl"]),
        est=_joints(bm, tr["rot"], tr["transl"]),
        ref=_joints(bm, out.rotmats, out.transl),
        n=n,
    )


@needs_bundle
def test_bundled_prior_cuts_acceleration_error(refined_track):
    from hmrflow.priors.metrics import accel_error, mpjpe

    t = refined_track
    a_in = accel_error(t["est"], t["gt"]).mean()
    a_out = accel_error(t["ref"], t["gt"]).mean()
    assert a_out < a_in / 3.0, (a_in, a_out)
    assert mpjpe(t["ref"], t["gt"]).mean() < mpjpe(t["est"], t["gt"]).mean()


@needs_bundle
def test_no_acceleration_spike_at_window_borders(refined_track):
    t = refined_track
    cfg, n = t["cfg"], t["n"]
    acc = np.linalg.norm(np.diff(t["ref"] - t["ref"][:, :1], n=2, axis=0), axis=-1).mean(-1)  # (n-2,) centred at 1..n-2
    acc_gt = np.linalg.norm(np.diff(t["gt"] - t["gt"][:, :1], n=2, axis=0), axis=-1).mean(-1)
    err = np.abs(acc - acc_gt)
    starts = plan_windows(n, cfg.window, cfg.overlap)
    border = np.zeros(n, bool)
    for s in starts[1:]:  # where one window hands over to the next
        border[s : s + cfg.overlap] = True
    for s in starts[:-1]:
        border[max(0, s + cfg.window - 2) : s + cfg.window + 2] = True  # the last frames of a window
    border = border[1:-1]
    assert border.any() and (~border).any()
    assert err[border].mean() < 1.5 * err[~border].mean() + 1e-4, (err[border].mean(), err[~border].mean())


def _ray_error(joints: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(T,) angle (radians) between the camera rays to the predicted and the true pelvis."""
    a = joints[:, 0] / np.linalg.norm(joints[:, 0], axis=-1, keepdims=True)
    b = gt[:, 0] / np.linalg.norm(gt[:, 0], axis=-1, keepdims=True)
    return np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0))


@needs_bundle
def test_bundled_prior_keeps_people_where_the_image_shows_them(refined_track):
    # refinement may fix depth and pose, but the body must stay on its pixels: boxes, overlays
    # and evaluation match people by where they project
    t = refined_track
    assert _ray_error(t["ref"], t["gt"]).mean() <= 1.1 * _ray_error(t["est"], t["gt"]).mean() + 1e-3


def test_frame_rate_warning_is_given_once_per_video(caplog) -> None:
    stage = RefineStage(RefineConfig())
    stage.setup()
    f = np.arange(0, 40)
    with caplog.at_level("WARNING", logger="hmrflow.stages.refine.stage"):
        for tid in (1, 2, 3):  # three people of one 15 fps archive video
            stage(_seq(f, f / 15.0, track_id=tid))
        stage(_seq(f, f / 30.0, track_id=4))  # at the prior's rate: nothing to say
    warned = [r for r in caplog.records if "the prior was trained at" in r.getMessage()]
    assert len(warned) == 1 and "15.0 fps" in warned[0].getMessage()
