"""Frame windows and exact 2x area shrinking (hmrflow.pipeline.images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.pipeline.images import as_nchw, frame_window, halve


def test_window_inside_and_across_the_frame_border():
    frame = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    inside = frame_window(frame, 1, 2, 3, 2)
    assert inside.dtype == np.float32 and np.array_equal(inside, frame[2:4, 1:4].astype(np.float32))
    across = frame_window(torch.from_numpy(frame), -2, -1, 4, 3)  # torch frames too
    assert across.shape == (3, 4, 3)
    assert np.all(across[0] == 0) and np.all(across[:, :2] == 0)
    assert np.array_equal(across[1:, 2:], frame[0:2, 0:2].astype(np.float32))
    assert np.all(frame_window(frame, 10, 10, 2, 2) == 0)  # wholly outside: black


def test_halve_is_the_mean_of_each_2x2_block():
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
    want = w.reshape(3, 2, 4, 2, 3).mean((1, 3))
    assert np.allclose(halve(w), want, atol=1e-4)
    with pytest.raises(ValueError, match="even"):
        halve(w[:5])


def test_as_nchw_is_a_view_in_channels_last_layout():
    w = np.zeros((4, 6, 3), np.float32)
    t = as_nchw(w)
    assert t.shape == (1, 3, 4, 6) and t.is_contiguous(memory_format=torch.channels_last)
    w[1, 2, 0] = 7.0
    assert float(t[0, 0, 1, 2]) == 7.0
