"""Tracking stage: identities through crossings, occlusions, exits, false detections, VFR."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hmrflow.pipeline.boxes import box_iou
from hmrflow.pipeline.config import TrackConfig, load_config
from hmrflow.pipeline.stage import Stage
from hmrflow.pipeline.types import MeshEstimates, TrackedEstimates
from hmrflow.stages.track import TrackStage, track_video
from hmrflow.stages.track.cost import gated_assignment, mahalanobis_sq, pose_distance, shape_distance_sq
from hmrflow.stages.track.kalman import kf_init, kf_predict, kf_update, root_measurement_noise
from hmrflow.stages.track.simulate import (
    Camera,
    PersonPath,
    SimNoise,
    crossing_people,
    project_box,
    regular_pts,
    simulate,
    vfr_pts,
)

CFG = TrackConfig()
CLEAN = SimNoise(miss_prob=0.03, false_pos_per_frame=0.0)


def identity_map(track_id: np.ndarray, gt_id: np.ndarray) -> dict[int, set[int]]:
    """person -> set of track ids given to their rows (-1 = untracked)."""
    return {int(g): set(track_id[gt_id == g].tolist()) for g in np.unique(gt_id[gt_id >= 0])}


def assert_pure(track_id: np.ndarray, gt_id: np.ndarray) -> None:
    """Every kept track holds one person only."""
    for k in np.unique(track_id[track_id >= 0]):
        people = set(gt_id[track_id == k].tolist())
        assert len(people) == 1, f"track {k} mixes people {people}"


# --------------------------------------------------------------------- scenarios
@pytest.mark.parametrize("same_depth", [False, True])
def test_two_people_crossing_keep_identities(same_depth: bool) -> None:
    people = crossing_people(6.0, same_depth=same_depth)
    pts = regular_pts(6.0, 30)
    # the scene really is a crossing: the true boxes overlap strongly mid-way
    cam = Camera()
    ious = [
        box_iou(project_box(people[0].position(t), cam)[None], project_box(people[1].position(t), cam)[None])[0, 0]
        for t in pts
    ]
    assert max(ious) > 0.4
    sim = simulate(people, pts, CLEAN, seed=3)
    ids, stats = track_video(sim.est, CFG)
    assert stats.n_tracks_kept == 2
    assert identity_map(ids, sim.gt_id) == {0: {0}, 1: {1}}


def _hidden_scene(hidden_s: float, fps: float, seed: int = 0):
    people = [
        PersonPath(0, ((0.0, -2.0, 5.0), (8.0, 2.0, 5.5)), hidden=((2.5, 2.5 + hidden_s),)),
        PersonPath(1, ((0.0, 1.5, 6.5), (8.0, -1.5, 6.0))),
    ]
    return simulate(people, regular_pts(8.0, fps), CLEAN, seed=seed)


@pytest.mark.parametrize("fps", [10.0, 30.0, 60.0])
def test_person_hidden_1_5s_comes_back_with_same_id(fps: float) -> None:
    sim = _hidden_scene(1.5, fps)
    p0 = sim.gt_id == 0
    gap = np.diff(np.sort(sim.est.pts[p0])).max()
    assert gap >= 1.5 - 1e-6  # the person really was unseen that long
    ids, stats = track_video(sim.est, CFG)
    assert identity_map(ids, sim.gt_id) == {0: {0}, 1: {1}}
    assert stats.n_reidentified >= 1


ONLINE = TrackConfig(stitch_window_s=0.0)  # the online pass alone (no whole-video stitching)


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_online_pass_gives_a_new_id_after_its_reid_window(fps: float) -> None:
    sim = _hidden_scene(3.0, fps)
    ids, _ = track_video(sim.est, ONLINE)
    assert_pure(ids, sim.gt_id)
    m = identity_map(ids, sim.gt_id)
    assert len(m[0]) == 2 and -1 not in m[0]
    before = ids[(sim.gt_id == 0) & (sim.est.pts < 2.5)]
    after = ids[(sim.gt_id == 0) & (sim.est.pts > 5.5)]
    assert len(set(before)) == 1 and len(set(after)) == 1 and before[0] != after[0]
    # the window is in seconds and configurable: a 4 s window re-identifies the person
    ids4, _ = track_video(sim.est, TrackConfig(reid_window_s=4.0, stitch_window_s=0.0))
    assert identity_map(ids4, sim.gt_id)[0] == {0}


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_person_hidden_3s_behind_a_pillar_keeps_the_id_through_stitching(fps: float) -> None:
    sim = _hidden_scene(3.0, fps)
    ids, stats = track_video(sim.est, CFG)  # default: stitching across gaps up to 5 s
    assert_pure(ids, sim.gt_id)
    assert identity_map(ids, sim.gt_id) == {0: {0}, 1: {1}}
    assert stats.n_tracklets >= 3 and stats.n_joins == stats.n_tracklets - 2
    # a gap longer than the stitching window stays a break
    ids_short, _ = track_video(sim.est, TrackConfig(stitch_window_s=2.0))
    assert len(identity_map(ids_short, sim.gt_id)[0]) == 2


def test_false_single_frame_detection_makes_no_track() -> None:
    sim = _hidden_scene(0.0, 30)
    est = sim.est
    # one false person, far from everybody, in one frame only
    row = int(np.flatnonzero(est.frame_idx == 100)[0])
    fake = est.select([row])
    fake = MeshEstimates(
        video_id=est.video_id,
        frame_idx=fake.frame_idx,
        pts=fake.pts,
        boxes_xyxy=np.array([[1000, 100, 1100, 400]], np.float32),
        scores=np.array([0.9], np.float32),
        rotmats=fake.rotmats,
        betas=np.full((1, 10), 2.0, np.float32),
        cam_t=np.array([[2.5, 0.0, 6.0]], np.float32),
        focal=fake.focal,
        confidence=np.array([0.9], np.float32),
    )
    both = MeshEstimates.cat([est, fake])
    ids, stats = track_video(both, CFG)
    assert ids[-1] == -1
    assert stats.n_tracks_kept == 2
    out = TrackStage(CFG)(both)
    assert len(out) == len(est) and set(out.track_id.tolist()) == {0, 1}


def test_random_false_detections_make_no_tracks() -> None:
    people = crossing_people(6.0)
    sim = simulate(people, regular_pts(6.0, 30), SimNoise(miss_prob=0.03, false_pos_per_frame=0.3), seed=5)
    assert (sim.gt_id == -1).sum() > 30
    ids, stats = track_video(sim.est, CFG)
    assert stats.n_tracks_kept == 2
    assert np.all(ids[sim.gt_id == -1] == -1)
    assert identity_map(ids, sim.gt_id) == {0: {0}, 1: {1}}


def test_variable_frame_rate_and_subsampling() -> None:
    rng = np.random.default_rng(7)
    people = crossing_people(6.0, same_depth=True) + [PersonPath(2, ((0.0, 0.0, 8.5), (6.0, 1.0, 4.0)))]
    pts = vfr_pts(6.0, 15, rng, spread=3.0)
    dts = np.diff(pts)
    assert dts.max() / dts.min() > 4  # really irregular
    fidx = np.cumsum(rng.integers(1, 5, len(pts)))  # gaps in frame numbers too
    sim = simulate(people, pts, CLEAN, seed=7, frame_idx=fidx)
    ids, stats = track_video(sim.est, CFG)
    assert stats.n_tracks_kept == 3
    assert_pure(ids, sim.gt_id)
    m = identity_map(ids, sim.gt_id)
    assert all(len(v) == 1 and -1 not in v for v in m.values())


def test_dt_comes_from_pts_not_frame_counts() -> None:
    """Same rows, timestamps stretched: a 1.5 s gap becomes 3 s and exceeds the window."""
    sim = _hidden_scene(1.5, 30)
    ids, _ = track_video(sim.est, ONLINE)
    assert len(identity_map(ids, sim.gt_id)[0]) == 1
    slow = MeshEstimates(
        **{**{f: getattr(sim.est, f) for f in MeshEstimates.ROW_FIELDS}, "video_id": "slow", "pts": sim.est.pts * 2.0}
    )
    ids2, _ = track_video(slow, ONLINE)
    assert len(identity_map(ids2, sim.gt_id)[0]) == 2


# --------------------------------------------------------------------- contract
def test_deterministic_and_independent_of_row_order() -> None:
    sim = simulate(crossing_people(6.0), regular_pts(6.0, 30), SimNoise(false_pos_per_frame=0.2), seed=11)
    stage = TrackStage(CFG)
    a = stage(sim.est)
    b = stage(sim.est)
    perm = np.random.default_rng(0).permutation(len(sim.est))
    c = stage(sim.est.select(perm))
    assert a == b
    assert a == c


def test_stage_output_contract() -> None:
    sim = _hidden_scene(0.0, 30)
    stage = TrackStage(CFG)
    assert isinstance(stage, Stage) and not stage.needs_actor()
    stage.setup()
    out = stage(sim.est)
    assert isinstance(out, TrackedEstimates) and out.video_id == "sim"
    assert out.track_id.dtype == np.int64
    # sorted by (frame, track); ids 0..K-1 in order of first appearance
    key = out.frame_idx * 100 + out.track_id
    assert np.all(np.diff(key) > 0)
    first = [out.pts[out.track_id == k].min() for k in range(out.track_id.max() + 1)]
    assert first == sorted(first)
    assert set(out.track_id.tolist()) == set(range(len(first)))
    # a Ray batch round trip keeps everything
    assert TrackedEstimates.from_columns(out.to_columns()) == out


def test_empty_and_invalid_rows() -> None:
    sim = _hidden_scene(0.0, 30)
    empty = sim.est.select(np.zeros(len(sim.est), bool))
    out = TrackStage(CFG)(empty)
    assert len(out) == 0 and out.video_id == "sim"
    bad_cam_t = sim.est.cam_t.copy()
    bad_cam_t[::7] = np.nan
    est = MeshEstimates(
        **{**{f: getattr(sim.est, f) for f in MeshEstimates.ROW_FIELDS}, "video_id": "sim", "cam_t": bad_cam_t}
    )
    ids, stats = track_video(est, CFG)
    assert np.all(ids[::7] == -1)
    assert stats.n_tracks_kept == 2


def test_short_tracks_dropped_and_confirmation() -> None:
    # a person seen for 0.2 s only (6 frames): confirmed but shorter than min_track_s
    people = [PersonPath(0, ((0.0, 0.0, 5.0), (4.0, 1.0, 5.0))), PersonPath(1, ((1.0, -2.0, 6.0), (1.2, -1.9, 6.0)))]
    sim = simulate(people, regular_pts(4.0, 30), SimNoise(miss_prob=0.0), seed=1)
    ids, _ = track_video(sim.est, CFG)
    assert np.all(ids[sim.gt_id == 1] == -1)
    ids0, _ = track_video(sim.est, TrackConfig(min_track_s=0.1))
    assert len(set(ids0[sim.gt_id == 1].tolist())) == 1 and ids0[sim.gt_id == 1][0] >= 0


def test_work_is_linear_in_frames() -> None:
    """People come and go over a long video: per-frame work and live tracks stay bounded."""

    def scene(duration: float):
        people = []
        for i in range(int(duration // 4)):
            t0 = 4.0 * i
            x0 = -2.0 if i % 2 else 2.0
            people.append(PersonPath(i, ((t0, x0, 5.0 + (i % 3)), (t0 + 6.0, -x0, 5.0 + (i % 3)))))
        return simulate(people, regular_pts(duration, 10), CLEAN, seed=2)

    short, long = scene(20.0), scene(80.0)
    _, s1 = track_video(short.est, CFG)
    _, s2 = track_video(long.est, CFG)
    assert 3.5 < s2.n_frames / s1.n_frames < 4.5  # frames with at least one person
    assert s2.max_live_tracks <= 4 and s1.max_live_tracks <= 4
    per_frame = s2.pair_evaluations / s2.n_frames
    assert per_frame <= 3 * s2.max_live_tracks  # bounded work per frame
    assert 3.0 < s2.pair_evaluations / s1.pair_evaluations < 5.0


def test_config_fields_validated() -> None:
    cfg = load_config("clip", ["track.reid_window_s=1.5", "track.gate_chi2=20"])
    assert cfg.track.reid_window_s == 1.5 and cfg.track.gate_chi2 == 20
    from hmrflow.pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="track.confirm_hits"):
        load_config("clip", ["track.confirm_hits=0"])


# --------------------------------------------------------------------- pieces
def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[50 / 150, 0.0], [0.0, 0.0]])


def test_gated_assignment_known_answers() -> None:
    cost = np.array([[1.0, 2.0], [1.5, np.inf]])
    assert gated_assignment(cost, 10.0) == [(0, 1), (1, 0)]
    # a pair above max_cost is left unmatched rather than forced
    assert gated_assignment(np.array([[1.0, 20.0], [30.0, 40.0]]), 10.0) == [(0, 0)]
    # two tracks want the same detection: the cheaper one gets it, the other stays unmatched
    assert gated_assignment(np.array([[2.0, 20.0], [1.0, 30.0]]), 10.0) == [(1, 0)]
    # any allowed pair beats leaving both unmatched (each unmatched side costs max_cost)
    assert gated_assignment(np.array([[1.0, 9.0], [9.0, np.inf]]), 10.0) == [(0, 1), (1, 0)]
    assert gated_assignment(np.zeros((0, 3)), 1.0) == []


def test_mahalanobis_and_shape_distances() -> None:
    mean = np.array([[0.0, 0.0, 0.0]])
    cov = np.diag([1.0, 4.0, 9.0])[None]
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(mahalanobis_sq(mean, cov, z), [[3.0, 0.0]])
    d = shape_distance_sq(np.zeros((1, 10)), np.full((2, 10), 0.5), np.array([0.5]))
    np.testing.assert_allclose(d, [[1.0, 1.0]])


def test_pose_distance_known_angle() -> None:
    eye = np.tile(np.eye(3), (1, 24, 1, 1))
    rot = Rotation.from_rotvec([0.0, 0.0, 0.3]).as_matrix()
    other = eye.copy()
    other[0, :12] = rot
    np.testing.assert_allclose(pose_distance(eye, other), [[0.15]], atol=1e-6)


def test_kalman_dt_consistency_and_velocity() -> None:
    R = root_measurement_noise(np.array([0.0, 0.0, 5.0]), 0.05, 0.08)
    assert np.isclose(R[2, 2], 0.4**2) and np.isclose(R[0, 0], 0.05**2)
    s = kf_init(np.array([0.0, 0.0, 5.0]), R, 2.0)
    # two half steps equal one full step (exact for the Wiener acceleration model)
    a = kf_predict(kf_predict(s, 0.05, 3.0), 0.05, 3.0)
    b = kf_predict(s, 0.1, 3.0)
    np.testing.assert_allclose(a.x, b.x)
    np.testing.assert_allclose(a.P, b.P, atol=1e-12)
    # irregular dt, exact measurements of a constant 1.2 m/s walk: velocity is learnt
    t = np.cumsum(np.r_[0.0, np.random.default_rng(0).uniform(0.01, 0.2, 40)])
    st = kf_init(np.array([0.0, 0.0, 5.0]), R, 2.0)
    for t_prev, t_now in zip(t[:-1], t[1:]):
        st = kf_predict(st, t_now - t_prev, 3.0)
        st = kf_update(st, np.array([1.2 * t_now, 0.0, 5.0]), R)
    np.testing.assert_allclose(st.x[3:], [1.2, 0.0, 0.0], atol=0.05)
    assert np.all(np.linalg.eigvalsh(st.P) > 0)


# ------------------------------------------------------------- appearance, stitching, duplicates
def test_two_people_in_the_same_clothes_crossing_keep_their_ids() -> None:
    """Appearance cannot tell them apart (one shared descriptor): motion decides."""
    for same_depth in (False, True):
        noise = SimNoise(miss_prob=0.03, appearance=0.15, same_clothes=True)
        sim = simulate(crossing_people(6.0, same_depth=same_depth), regular_pts(6.0, 30), noise, seed=3)
        ids, _ = track_video(sim.est, CFG)
        assert_pure(ids, sim.gt_id)
        assert identity_map(ids, sim.gt_id) == {0: {0}, 1: {1}}


def _dressed(sim, hues: tuple[float, ...], noise: float = 0.15, seed: int = 0):
    """``sim`` with person k wearing one colour of hue ``hues[k]`` (in turns) in every band, each
    row mixed with ``noise`` of a random descriptor (views differ)."""
    from hmrflow.stages.track.appearance import BANDS, HUE_BINS, L_BINS, PER_BAND
    from hmrflow.stages.track.simulate import random_descriptor

    rng = np.random.default_rng(seed)
    app = np.zeros(sim.est.appearance.shape)
    for k, h in enumerate(hues):
        look = np.zeros(app.shape[1])
        for band in range(len(BANDS)):
            o = band * PER_BAND
            hist = np.exp(6.0 * np.cos(2 * np.pi * (np.arange(HUE_BINS) / HUE_BINS - h)))
            look[o : o + HUE_BINS] = hist / hist.sum()
            look[o + HUE_BINS : o + HUE_BINS + L_BINS] = 1.0 / L_BINS
            look[o + PER_BAND - 1] = 0.8
        for r in np.flatnonzero(sim.gt_id == k):
            app[r] = (1 - noise) * look + noise * random_descriptor(rng)
    est = MeshEstimates(
        **{
            **{f: getattr(sim.est, f) for f in MeshEstimates.ROW_FIELDS},
            "video_id": sim.est.video_id,
            "appearance": app.astype(np.float32),
        }
    )
    return type(sim)(est=est, gt_id=sim.gt_id, people=sim.people)


def test_person_returning_elsewhere_is_joined_by_appearance_not_by_motion() -> None:
    """A leaves at the right edge; B enters at the right edge just after, walking left (where A's
    motion points); A comes back 3.6 s later from the left edge.  Only appearance can join A's
    return to A and keep B apart."""
    a = PersonPath(0, ((0.0, 0.0, 5.0), (2.5, 3.6, 5.0), (5.5, -3.6, 5.0), (8.0, -0.5, 5.0)), hidden=((2.2, 5.8),))
    b = PersonPath(1, ((3.0, 3.6, 5.2), (8.0, 0.5, 5.2)))
    sim = _dressed(simulate([a, b], regular_pts(8.0, 30), SimNoise(miss_prob=0.02), seed=5), hues=(0.0, 0.5))
    ids, stats = track_video(sim.est, CFG)
    assert_pure(ids, sim.gt_id)
    m = identity_map(ids, sim.gt_id)
    assert len(m[0] - {-1}) == 1 and len(m[1] - {-1}) == 1 and not (m[0] & m[1] - {-1})
    assert stats.n_joins >= 1


def _with_duplicates(sim, person: int, frames: range) -> tuple[MeshEstimates, np.ndarray]:
    """Rows of ``person`` in ``frames`` detected a second time: an upper-body box inside the
    first and a root 0.15 m off (what a detector firing twice on one body gives)."""
    est = sim.est
    rows = np.flatnonzero((sim.gt_id == person) & np.isin(est.frame_idx, list(frames)))
    dup = est.select(rows)
    b = dup.boxes_xyxy.copy()
    b[:, 3] = b[:, 1] + 0.55 * (b[:, 3] - b[:, 1])
    dup = MeshEstimates(
        **{
            **{f: getattr(dup, f) for f in MeshEstimates.ROW_FIELDS},
            "video_id": est.video_id,
            "boxes_xyxy": b,
            "cam_t": dup.cam_t + np.float32([0.15, 0.0, 0.0]),
            "scores": dup.scores * 0.9,
        }
    )
    both = MeshEstimates.cat([est, dup])
    return both, np.r_[sim.gt_id, np.full(len(dup), person)]


def test_never_two_tracks_on_one_person_in_one_frame() -> None:
    sim = simulate([PersonPath(0, ((0.0, -2.0, 5.0), (6.0, 2.0, 5.0)))], regular_pts(6.0, 30), CLEAN, seed=2)
    est, gt = _with_duplicates(sim, 0, range(40, 130))
    ids, stats = track_video(est, CFG)
    assert stats.n_duplicate_rows > 0
    tracked = ids >= 0
    for f in np.unique(est.frame_idx[tracked]):
        assert len(set(ids[tracked & (est.frame_idx == f)].tolist())) == 1, f"two tracks on one person in frame {f}"
    assert set(ids[gt == 0].tolist()) - {-1} == {0}  # and the person stays one track


def test_stitching_work_is_linear_in_the_tracklets() -> None:
    """Candidate pairs come from a sorted sweep within the window: doubling a crowd's duration
    about doubles them, it does not quadruple them."""
    from hmrflow.stages.track.stitch import Tracklet, candidate_pairs

    def tracklets(n: int) -> list[Tracklet]:
        z3, zb, zd = np.zeros(3), np.zeros(10), np.zeros(51)
        return [Tracklet(np.array([i]), 2.0 * i, 2.0 * i + 1.5, z3, z3, z3, z3, zb, zb, zd, zd) for i in range(n)]

    n1 = len(candidate_pairs(tracklets(200), 5.0))
    n2 = len(candidate_pairs(tracklets(400), 5.0))
    assert n1 > 0 and n2 <= 2.1 * n1
