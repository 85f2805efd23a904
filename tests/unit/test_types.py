"""Column tables: length checks, round trips through flat columns, select/cat."""

from __future__ import annotations

import numpy as np
import pytest

from hmrflow.pipeline.types import (
    MASK_RES,
    Detections,
    FrameBatch,
    MeshEstimates,
    SMPLSequence,
    TrackedEstimates,
)


def _estimates(n: int, video_id: str = "v") -> MeshEstimates:
    rng = np.random.default_rng(n)
    return MeshEstimates(
        video_id=video_id,
        frame_idx=np.arange(n, dtype=np.int64),
        pts=np.arange(n) / 30.0,
        boxes_xyxy=rng.random((n, 4), dtype=np.float32),
        scores=rng.random(n, dtype=np.float32),
        rotmats=np.broadcast_to(np.eye(3, dtype=np.float32), (n, 24, 3, 3)).copy(),
        betas=rng.standard_normal((n, 10)).astype(np.float32),
        cam_t=rng.standard_normal((n, 3)).astype(np.float32),
        focal=np.full(n, 500.0, np.float32),
        confidence=np.ones(n, np.float32),
    )


def test_length_mismatch_names_the_column() -> None:
    with pytest.raises(ValueError, match="pts"):
        FrameBatch("v", np.arange(3), np.arange(2, dtype=float), np.zeros((3, 4, 4, 3), np.uint8))


def test_non_array_column_rejected() -> None:
    with pytest.raises(TypeError, match="frame_idx"):
        FrameBatch("v", [0, 1], np.arange(2, dtype=float), np.zeros((2, 4, 4, 3), np.uint8))  # type: ignore[arg-type]


def test_columns_round_trip_and_are_flat_equal_length() -> None:
    est = _estimates(5)
    cols = est.to_columns()
    assert set(cols) == {"video_id", *MeshEstimates.ROW_FIELDS}
    assert all(len(v) == 5 for v in cols.values())
    back = MeshEstimates.from_columns(cols)
    assert back == est
    assert back.video_id == "v" and isinstance(back.video_id, str)


def test_from_columns_copies_read_only_arrays() -> None:
    cols = _estimates(3).to_columns()
    for v in cols.values():
        v.flags.writeable = False
    back = MeshEstimates.from_columns(cols)
    back.cam_t[0, 0] = 42.0  # must not raise: Ray batches arrive read-only
    assert cols["cam_t"][0, 0] != 42.0


def test_sequence_meta_fields_survive_columns() -> None:
    t = 4
    seq = SMPLSequence(
        video_id="clip",
        track_id=7,
        betas=np.arange(10, dtype=np.float32),
        frame_idx=np.array([0, 2, 3, 9]),
        pts=np.array([0.0, 0.1, 0.15, 0.5]),
        observed=np.array([True, False, True, True]),
        rotmats=np.zeros((t, 24, 3, 3), np.float32),
        transl=np.zeros((t, 3), np.float32),
        confidence=np.ones(t, np.float32),
    )
    back = SMPLSequence.from_columns(seq.to_columns())
    assert back.track_id == 7 and back.betas.tolist() == list(range(10))
    assert back == seq


def test_sequence_rejects_unsorted_frames_and_bad_betas() -> None:
    kw = dict(
        video_id="c",
        track_id=0,
        pts=np.zeros(2),
        observed=np.ones(2, bool),
        rotmats=np.zeros((2, 24, 3, 3)),
        transl=np.zeros((2, 3)),
        confidence=np.ones(2),
    )
    with pytest.raises(ValueError, match="increasing"):
        SMPLSequence(betas=np.zeros(10), frame_idx=np.array([3, 3]), **kw)
    with pytest.raises(ValueError, match="betas"):
        SMPLSequence(betas=np.zeros(16), frame_idx=np.array([0, 1]), **kw)


def test_select_and_cat() -> None:
    est = _estimates(6)
    odd = est.select(est.frame_idx % 2 == 1)
    assert odd.frame_idx.tolist() == [1, 3, 5]
    both = MeshEstimates.cat([est.select(slice(0, 2)), est.select(slice(2, 6))])
    assert both == est
    with pytest.raises(ValueError, match="video_id"):
        MeshEstimates.cat([est, _estimates(2, video_id="other")])
    with pytest.raises(ValueError, match="mask"):
        est.select(np.array([True, False]))


def test_tracked_estimates_require_track_ids() -> None:
    est = _estimates(3)
    fields = {k: getattr(est, k) for k in ("video_id", *MeshEstimates.ROW_FIELDS)}
    tr = TrackedEstimates(**fields, track_id=np.array([0, 0, 1]))
    assert TrackedEstimates.from_columns(tr.to_columns()).track_id.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="track_id"):
        TrackedEstimates(**fields)  # default empty track ids != 3 rows


def test_empty_detections_have_mask_shape() -> None:
    d = Detections.empty("v")
    assert len(d) == 0 and d.masks.shape == (0, MASK_RES, MASK_RES)
