"""tracks_to_sequences: one SMPLSequence per track, known answers on a hand-made table."""

from __future__ import annotations

import numpy as np

from hmrflow.pipeline.config import TrackConfig
from hmrflow.pipeline.types import SMPLSequence, TrackedEstimates
from hmrflow.stages.track import TrackStage, tracks_to_sequences, weighted_median
from hmrflow.stages.track.simulate import SimNoise, crossing_people, regular_pts, simulate


def _table(track_id, frame_idx, confidence, betas0=None) -> TrackedEstimates:
    n = len(track_id)
    rng = np.random.default_rng(0)
    betas = np.zeros((n, 10), np.float32)
    if betas0 is not None:
        betas[:, 0] = betas0
    return TrackedEstimates(
        video_id="v",
        frame_idx=np.asarray(frame_idx, np.int64),
        pts=np.asarray(frame_idx, np.float64) / 25.0,
        boxes_xyxy=np.zeros((n, 4), np.float32),
        scores=np.ones(n, np.float32),
        rotmats=rng.normal(size=(n, 24, 3, 3)).astype(np.float32),
        betas=betas,
        cam_t=np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        focal=np.full(n, 1000.0, np.float32),
        confidence=np.asarray(confidence, np.float32),
        track_id=np.asarray(track_id, np.int64),
    )


def test_one_sorted_sequence_per_track_and_duplicates_keep_best() -> None:
    # track 1 rows out of order; track 0 has two rows in frame 5 (conf 0.3 and 0.9); one untracked row
    t = _table(
        track_id=[1, 0, 0, 1, 0, 0, -1, 1],
        frame_idx=[7, 5, 3, 2, 5, 9, 4, 4],
        confidence=[0.5, 0.3, 0.8, 0.6, 0.9, 0.7, 1.0, 0.4],
        betas0=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    )
    seqs = tracks_to_sequences(t)
    assert [s.track_id for s in seqs] == [0, 1]
    s0, s1 = seqs
    assert isinstance(s0, SMPLSequence) and s0.video_id == "v"
    np.testing.assert_array_equal(s0.frame_idx, [3, 5, 9])
    np.testing.assert_array_equal(s1.frame_idx, [2, 4, 7])
    # frame 5 of track 0: the row with confidence 0.9 (row 4) is kept
    np.testing.assert_allclose(s0.confidence, [0.8, 0.9, 0.7])
    np.testing.assert_array_equal(s0.transl, t.cam_t[[2, 4, 5]])
    np.testing.assert_array_equal(s0.rotmats, t.rotmats[[2, 4, 5]])
    np.testing.assert_allclose(s0.pts, [3 / 25, 5 / 25, 9 / 25])
    assert s0.observed.dtype == bool and s0.observed.all() and s1.observed.all()
    # betas: weighted median over kept rows; track 0 keeps betas0 3 (w .8), 5 (w .9), 6 (w .7)
    assert s0.betas.shape == (10,) and np.isclose(s0.betas[0], 5.0)
    # track 1: values 4 (w .6), 8 (w .4), 1 (w .5) -> sorted 1(.5) 4(.6) 8(.4): half = .75 -> 4
    assert np.isclose(s1.betas[0], 4.0)
    assert np.all(s0.betas[1:] == 0)


def test_weighted_median_known_values() -> None:
    v = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, 40.0]])
    np.testing.assert_allclose(weighted_median(v, np.ones(4)), [2.5, 25.0])  # even count: midpoint
    np.testing.assert_allclose(weighted_median(v, np.array([1.0, 1.0, 1.0, 0.0])), [2.0, 20.0])
    np.testing.assert_allclose(weighted_median(v, np.array([0.1, 0.1, 0.1, 5.0])), [100.0, 40.0])
    np.testing.assert_allclose(weighted_median(v, np.zeros(4)), [2.5, 25.0])  # all-zero = equal weights


def test_sequences_from_tracker_output() -> None:
    sim = simulate(crossing_people(4.0), regular_pts(4.0, 30), SimNoise(miss_prob=0.05), seed=2)
    tracked = TrackStage(TrackConfig())(sim.est)
    seqs = tracks_to_sequences(tracked)
    assert len(seqs) == 2
    for s in seqs:
        assert np.all(np.diff(s.frame_idx) > 0) and np.all(np.diff(s.pts) > 0)
        assert len(s) == int((tracked.track_id == s.track_id).sum())
        # gaps are not filled here: fewer rows than frames spanned (5% dropouts)
        assert len(s) < s.frame_idx[-1] - s.frame_idx[0] + 1
        # one shape per track, close to the rows' betas
        rows = tracked.track_id == s.track_id
        assert np.abs(s.betas - np.median(tracked.betas[rows], axis=0)).max() < 0.2
