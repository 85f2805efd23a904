"""Known-answer tests of the metrics (metres in, mm out; NumPy and torch entry points) and box geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmrflow.pipeline import boxes as B
from hmrflow.priors import metrics as M

#: E[chi_3] = E||z|| for z ~ N(0, I_3) = 2 sqrt(2/pi)
E_CHI3 = 2.0 * math.sqrt(2.0 / math.pi)


def _skeleton(rng: np.random.Generator, n: int = 5, j: int = 24) -> np.ndarray:
    return rng.normal(scale=0.3, size=(n, j, 3)) + np.array([0.0, 0.0, 4.0])


def test_mpjpe_of_identical_skeletons_is_zero() -> None:
    gt = _skeleton(np.random.default_rng(0))
    assert np.allclose(M.mpjpe(gt, gt), 0.0)
    assert np.allclose(M.mpjpe(gt, gt, align="none"), 0.0)
    assert np.allclose(M.pa_mpjpe(gt, gt), 0.0, atol=1e-6)


@pytest.mark.parametrize("d_mm", [1.0, 25.0, 300.0])
def test_constant_offset_is_removed_by_pelvis_alignment_only(d_mm: float) -> None:
    gt = _skeleton(np.random.default_rng(1))
    direction = np.array([2.0, -1.0, 2.0]) / 3.0  # unit vector
    pred = gt + direction * d_mm / 1000.0
    assert np.allclose(M.mpjpe(pred, gt, align="pelvis"), 0.0, atol=1e-9)
    assert np.allclose(M.mpjpe(pred, gt, align="none"), d_mm, rtol=1e-9)
    # vertices: same rule for PVE
    assert np.allclose(M.pve(pred, gt, pred[:, 0], gt[:, 0]), 0.0, atol=1e-9)
    assert np.allclose(M.pve(pred, gt, None, None), d_mm, rtol=1e-9)


def test_single_joint_error_is_averaged_over_joints() -> None:
    gt = _skeleton(np.random.default_rng(2), n=1)
    pred = gt.copy()
    pred[0, 5, 1] += 0.048  # 48 mm on one of 24 joints
    assert M.mpjpe(pred, gt)[0] == pytest.approx(2.0)


def test_pa_mpjpe_is_invariant_to_similarity_transform_of_prediction() -> None:
    rng = np.random.default_rng(3)
    gt = _skeleton(rng, n=8)
    pred = gt + rng.normal(scale=0.02, size=gt.shape)
    base = M.pa_mpjpe(pred, gt)
    assert np.all(base > 1.0)  # the noise is not aligned away
    rots = Rotation.random(8, random_state=4).as_matrix()
    scale = rng.uniform(0.3, 3.0, size=8)
    shift = rng.normal(size=(8, 1, 3))
    moved = scale[:, None, None] * np.einsum("nkl,njl->njk", rots, pred) + shift
    assert np.allclose(M.pa_mpjpe(moved, gt), base, atol=1e-6)
    # and a transformed copy of gt aligns back perfectly
    assert np.allclose(
        M.pa_mpjpe(scale[:, None, None] * np.einsum("nkl,njl->njk", rots, gt) + shift, gt), 0.0, atol=1e-6
    )


def test_pa_mpjpe_never_uses_a_reflection() -> None:
    gt = _skeleton(np.random.default_rng(5), n=4)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    aligned = M.procrustes_align(mirrored, gt)
    # the aligned set is a proper rotation of the mirrored one: it keeps its handedness
    a0 = aligned - aligned.mean(1, keepdims=True)
    m0 = mirrored - mirrored.mean(1, keepdims=True)
    for i in range(len(gt)):
        r, *_ = np.linalg.lstsq(m0[i], a0[i], rcond=None)
        assert np.linalg.det(r) > 0
    assert np.all(M.pa_mpjpe(mirrored, gt) > 10.0)


def test_accel_error_of_noise_on_a_sinusoid_matches_theory() -> None:
    """pred = gt + N(0, sigma^2) per coordinate and frame.

    The second difference of the noise n[t+1] - 2 n[t] + n[t-1] has variance
    (1 + 4 + 1) sigma^2 = 6 sigma^2 per coordinate, so its 3-D norm has mean
    sqrt(6) sigma E[chi_3], E[chi_3] = 2 sqrt(2/pi).  After pelvis alignment each
    non-pelvis joint carries n_j - n_pelvis (variance 2 sigma^2, so sqrt(12) sigma E[chi_3])
    and the pelvis none: the joint mean is (J-1)/J of that.  The sinusoid cancels.
    """
    rng = np.random.default_rng(6)
    t, j, sigma = 3000, 24, 0.01
    phase = rng.uniform(0, 2 * np.pi, size=(1, j, 3))
    gt = 0.5 * np.sin(2 * np.pi * np.arange(t)[:, None, None] / 45.0 + phase)
    pred = gt + rng.normal(scale=sigma, size=gt.shape)
    none = M.accel_error(pred, gt, align="none")
    assert none.shape == (t - 2,)
    assert none.mean() == pytest.approx(1000 * sigma * math.sqrt(6) * E_CHI3, rel=0.02)
    pel = M.accel_error(pred, gt)
    assert pel.mean() == pytest.approx(1000 * sigma * math.sqrt(12) * E_CHI3 * (j - 1) / j, rel=0.02)
    # noise-free: exactly zero, whatever the motion
    assert np.allclose(M.accel_error(gt, gt), 0.0)


def test_accel_error_only_inside_runs_of_consecutive_frames() -> None:
    frames = np.array([0, 1, 2, 5, 6, 7, 8, 10, 11])
    gt = np.zeros((len(frames), 2, 3))
    pred = gt.copy()
    pred[:, 1, 0] = np.arange(len(frames)) ** 2 * 0.001  # constant 2 mm/frame^2 on joint 1 (row-wise)
    out = M.accel_error(pred, gt, frame_idx=frames, align="none")
    assert out.shape == (1 + 2,)  # runs [0,1,2] and [5..8]; [10,11] is too short
    assert np.allclose(out, 2.0 / 2)  # mean over the 2 joints
    assert M.accel_centres(frames).tolist() == [1, 4, 5]
    # a key change breaks a run too
    key = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2])
    assert M.accel_centres(frames, key).tolist() == [1]


def test_jitter_of_a_cubic_is_its_constant_jerk() -> None:
    fps = 30.0
    t = np.arange(50) / fps
    c = 0.7  # x = c t^3  -> jerk 6c m/s^3
    joints = np.zeros((50, 3, 3))
    joints[:, :, 0] = (c * t**3)[:, None]
    assert np.allclose(M.jitter(joints, fps=fps), 6 * c)
    line = np.zeros((50, 3, 3))
    line[:, :, 2] = 4.0 + 0.5 * t[:, None]
    assert np.allclose(M.jitter(line, fps=fps), 0.0)
    # gaps split the runs: 3 frames are not enough for a third difference
    frames = np.array([0, 1, 2, 10, 11, 12, 13])
    assert M.jitter(joints[:7], frame_idx=frames, fps=fps).shape == (1,)


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [np.nan, 0, 1, 1]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2]], float)
    iou = B.box_iou(a, b)
    assert iou[0, 0] == pytest.approx(1 / 7)
    assert iou[0, 1] == pytest.approx(1.0)
    assert iou[1, 1] == pytest.approx(0.25)
    assert np.all(iou[2] == 0.0)


def test_project_box_known_values_and_clipping() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pts = np.array([[[-0.2, -0.1, 2.0], [0.2, 0.3, 2.0]]])
    assert np.allclose(B.project_box(pts, K, 100, 80), [[40.0, 35.0, 60.0, 55.0]])
    far_right = pts + np.array([0.9, 0, 0])  # x from 0.7 to 1.1 m -> 85..105 px, clipped at 100
    assert np.allclose(B.project_box(far_right, K, 100, 80), [[85.0, 35.0, 100.0, 55.0]])
    behind = pts * np.array([1, 1, -1])
    assert np.isnan(B.project_box(behind, K, 100, 80)).all()
    outside = pts + np.array([5.0, 0, 0])
    assert np.isnan(B.project_box(outside, K, 100, 80)).all()


def test_precision_recall_f1() -> None:
    assert M.precision_recall_f1(8, 2, 8) == pytest.approx((0.8, 0.5, 16 / 26))
    p, r, f = M.precision_recall_f1(0, 0, 0)
    assert math.isnan(p) and math.isnan(r) and math.isnan(f)


# ------------------------------------------------------------------ torch path (losses, ECLM budget)
def test_torch_path_known_answers_and_equals_numpy() -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    gt = torch.randn(4, 24, 3, generator=g, dtype=torch.float64)
    shifted = gt + torch.tensor([0.0, 0.0, 0.01], dtype=torch.float64)  # pelvis-aligned: no error
    assert torch.allclose(M.mpjpe(shifted, gt), torch.zeros(4, dtype=torch.float64), atol=1e-9)
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    moved = 2.0 * gt @ rot.T + 0.3
    assert torch.allclose(M.pa_mpjpe(moved, gt), torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(M.procrustes_align(moved, gt), gt, atol=1e-9)
    off = gt.clone()
    off[:, 5] += torch.tensor([0.024, 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(M.mpjpe(off, gt), torch.full((4,), 1.0, dtype=torch.float64))  # 24 mm / 24 joints
    # the same numbers through the NumPy entry points
    noisy = gt + 0.02 * torch.randn(gt.shape, generator=g, dtype=torch.float64)
    for fn in (M.mpjpe, M.pa_mpjpe):
        t = fn(noisy, gt)
        n = fn(noisy.numpy(), gt.numpy())
        assert isinstance(n, np.ndarray) and isinstance(t, torch.Tensor)
        np.testing.assert_allclose(t.numpy(), n, rtol=1e-12)
        assert 10.0 < float(n.mean()) < 70.0  # 2 cm noise per axis (pelvis noisy too): tens of mm, not 0 or metres


def test_torch_path_is_differentiable() -> None:
    import torch

    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, 24, 3, generator=g)
    pred = (gt + 0.05 * torch.randn(gt.shape, generator=g)).requires_grad_(True)
    loss = M.pa_mpjpe(pred, gt).mean() + M.mpjpe(pred, gt).mean()
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a loss keeps the tensor's dtype when only the pelvis is removed
    assert M.align_pelvis(gt).dtype == torch.float32
