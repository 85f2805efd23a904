"""Tracks -> one :class:`SMPLSequence` per person.

Only observed frames are written here (``observed`` is all True); the refinement stage
fills gaps later.  Each track gets one body shape: the confidence-weighted median of
its per-frame betas (robust to a few bad estimates).
"""

from __future__ import annotations

import numpy as np

from hmrflow.pipeline.types import SMPLSequence, TrackedEstimates


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-column weighted median.

    values: (T, C); weights: (T,) non-negative (all-zero weights count as equal).
    Returns (C,): for each column the smallest value whose cumulative weight reaches
    half the total (the lower weighted median; averaged with the next value on an exact tie).
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    order = np.argsort(v, axis=0, kind="stable")  # (T, C)
    vs = np.take_along_axis(v, order, axis=0)
    cw = np.cumsum(w[order], axis=0)  # (T, C)
    half = cw[-1] / 2.0
    out = np.empty(v.shape[1])
    for c in range(v.shape[1]):
        i = int(np.searchsorted(cw[:, c], half[c] - 1e-12 * cw[-1, c]))
        if np.isclose(cw[i, c], half[c]) and i + 1 < len(vs):
            out[c] = 0.5 * (vs[i, c] + vs[i + 1, c])
        else:
            out[c] = vs[i, c]
    return out


def tracks_to_sequences(tracked: TrackedEstimates) -> list[SMPLSequence]:
    """One sequence per ``track_id`` (ascending), frames sorted by ``frame_idx``.

    Rows with ``track_id < 0`` are ignored.  When a frame holds two rows of one track the
    one with the higher ``confidence`` is kept (the first one on a tie).  ``transl`` is
    ``cam_t``; ``confidence`` is the estimator confidence; ``betas`` the weighted median.
    """
    out: list[SMPLSequence] = []
    tid = np.asarray(tracked.track_id)
    for k in np.unique(tid[tid >= 0]):
        rows = np.flatnonzero(tid == k)
        # sort by frame, best confidence first within a frame, then row index for ties
        rows = rows[np.lexsort((rows, -tracked.confidence[rows], tracked.frame_idx[rows]))]
        first = np.r_[True, tracked.frame_idx[rows][1:] != tracked.frame_idx[rows][:-1]]
        rows = rows[first]
        betas = weighted_median(tracked.betas[rows], tracked.confidence[rows]).astype(np.float32)
        out.append(
            SMPLSequence(
                video_id=tracked.video_id,
                track_id=int(k),
                betas=betas,
                frame_idx=tracked.frame_idx[rows].astype(np.int64),
                pts=tracked.pts[rows].astype(np.float64),
                observed=np.ones(rows.size, bool),
                rotmats=tracked.rotmats[rows].astype(np.float32),
                transl=tracked.cam_t[rows].astype(np.float32),
                confidence=tracked.confidence[rows].astype(np.float32),
                tracklet=tracked.tracklet_id[rows].astype(np.int64),
                feature=np.asarray(tracked.feature[rows], np.float16),
                vertices=np.asarray(tracked.vertices[rows], np.float16),
            )
        )
    return out
