"""Overlapping windows over a track and the weights that blend them back together.

A track of ``n`` frames is cut into windows of ``window`` frames whose starts advance by
``window - overlap``; the last window is aligned to the end of the track (so it may overlap
its neighbour by more).  A track shorter than one window gets a single window of ``n`` frames
(the caller pads it to the model's window length).

Blending: each window has a smooth taper (C1 smoothstep ramps over the ``overlap`` frames at
a side that touches another window, flat 1 elsewhere); per frame the tapers are normalised
to sum to exactly 1.  Inside an overlap the result moves smoothly from one window's output to
the next, so no step (and no acceleration spike) appears at window borders.
"""

from __future__ import annotations

import numpy as np


def plan_windows(n: int, window: int, overlap: int) -> np.ndarray:
    """Start frames (K,) int64 of the windows covering ``n`` frames.

    Every frame lies in at least one window ``[s, s + min(window, n))``; starts are strictly
    increasing; ``overlap`` must be in ``[0, window)``.
    """
    if n <= 0:
        return np.zeros(0, np.int64)
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got overlap={overlap}, window={window}")
    if n <= window:
        return np.zeros(1, np.int64)
    stride = window - overlap
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    return np.asarray(starts, np.int64)


def _ramp(k: int) -> np.ndarray:
    """(k,) smoothstep from near 0 to near 1 (strictly inside (0, 1))."""
    x = (np.arange(k, dtype=np.float64) + 0.5) / k
    return x * x * (3.0 - 2.0 * x)


def blend_weights(starts: np.ndarray, n: int, window: int, overlap: int) -> np.ndarray:
    """(K, L) weights of each window's frames, ``L = min(window, n)``; per frame they sum to 1.

    ``weights[k, i]`` multiplies frame ``starts[k] + i``.
    """
    starts = np.asarray(starts, np.int64)
    length = min(window, n)
    k = len(starts)
    raw = np.ones((k, length))
    ramp_len = max(1, min(overlap, length // 2))
    for j in range(k):
        if j > 0:  # a window before this one: fade in
            raw[j, :ramp_len] = np.minimum(raw[j, :ramp_len], _ramp(ramp_len))
        if j < k - 1:  # a window after: fade out
            raw[j, length - ramp_len :] = np.minimum(raw[j, length - ramp_len :], _ramp(ramp_len)[::-1])
    total = np.zeros(n)
    for j, s in enumerate(starts):
        total[s : s + length] += raw[j]
    if np.any(total <= 0):
        raise ValueError("windows do not cover every frame")
    return np.stack([raw[j] / total[s : s + length] for j, s in enumerate(starts)])


def stitch(values: np.ndarray, starts: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Blend per-window values (K, L, ...) into (n, ...) with :func:`blend_weights` weights."""
    out = np.zeros((n,) + values.shape[2:], dtype=np.float64)
    length = weights.shape[1]
    for j, s in enumerate(starts):
        w = weights[j].reshape((length,) + (1,) * (values.ndim - 2))
        out[s : s + length] += w * values[j, :length]
    return out
