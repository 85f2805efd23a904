"""Rotation conversions against scipy and known angles."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hmrflow.priors.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)


def _random_aa(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal((n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0, np.pi, (n, 1))
    aa = axis * angle
    aa[0] = 0.0  # identity
    aa[1] = [np.pi, 0, 0]  # half turn
    aa[2] = [0, 1e-8, 0]  # tiny
    aa[3] = axis[3] * (np.pi - 1e-6)  # near pi
    return aa


def test_axis_angle_to_matrix_matches_scipy() -> None:
    aa = _random_aa(500)
    ours = axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float64)).numpy()
    ref = Rotation.from_rotvec(aa).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_matrix_to_axis_angle_round_trip_up_to_pi() -> None:
    aa = _random_aa(500, seed=1)
    mats = torch.tensor(Rotation.from_rotvec(aa).as_matrix(), dtype=torch.float64)
    back = matrix_to_axis_angle(mats)
    # compare as rotations (axis-angle at exactly pi is sign-ambiguous)
    np.testing.assert_allclose(axis_angle_to_matrix(back).numpy(), mats.numpy(), atol=1e-7)
    ang = back.norm(dim=-1).numpy()
    assert ang.max() <= np.pi + 1e-9
    np.testing.assert_allclose(back[4:].numpy()[ang[4:] < 3.0], aa[4:][ang[4:] < 3.0], atol=1e-7)


def test_rot6d_round_trip_and_gram_schmidt() -> None:
    mats = torch.tensor(Rotation.random(100, random_state=3).as_matrix(), dtype=torch.float32)
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(mats)).numpy(), mats.numpy(), atol=1e-5)
    x = torch.randn(50, 6)
    r = rot6d_to_matrix(x)
    eye = torch.eye(3).expand(50, 3, 3)
    np.testing.assert_allclose((r.transpose(1, 2) @ r).numpy(), eye.numpy(), atol=1e-5)
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), np.ones(50), atol=1e-5)


def test_rot6d_layout_is_first_two_columns() -> None:
    m = torch.tensor(Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix(), dtype=torch.float32)
    six = matrix_to_rot6d(m)
    np.testing.assert_allclose(six[:3].numpy(), m[:, 0].numpy(), atol=1e-7)
    np.testing.assert_allclose(six[3:].numpy(), m[:, 1].numpy(), atol=1e-7)
