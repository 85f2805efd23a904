"""Evaluation end to end on tiny hand-made gt.npz / tracks.parquet folders.

A toy NumPy "body model" (joints = template + transl + 0.1 * that joint's axis-angle;
vertices = each joint +-5 cm along x) stands in for the body model, so every expected
number is known exactly.  One test also runs the real synthetic body model when it is
installed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmrflow.jobs import cli
from hmrflow.jobs.evaluate import EvalInputError, evaluate
from hmrflow.jobs.evaluate import report as report_mod
from hmrflow.jobs.evaluate.matching import assign_frame, match_video

W, H = 640, 480
K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
TEMPLATE = np.stack([0.2 * np.sin(np.arange(24)), np.linspace(-0.8, 0.8, 24), 0.05 * np.cos(np.arange(24))], -1)


def toy_mesh(poses: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,72), (B,10), (B,3) -> joints (B,24,3), vertices (B,48,3)."""
    joints = TEMPLATE[None] * (1 + 0.1 * betas[:, :1, None]) + transl[:, None] + 0.1 * poses.reshape(-1, 24, 3)
    off = np.array([0.05, 0.0, 0.0])
    verts = np.concatenate([joints - off, joints + off], axis=1)
    return joints.astype(np.float32), verts.astype(np.float32)


def gt_arrays(n_frames: int = 20, n_people: int = 2) -> dict[str, np.ndarray]:
    """People side by side 5 m in front of the camera, swaying (so accelerations are not zero)."""
    rng = np.random.default_rng(0)
    t = np.arange(n_frames)
    transl = np.zeros((n_frames, n_people, 3), np.float32)
    for p in range(n_people):
        transl[:, p, 0] = -1.5 + 3.0 * p / max(n_people - 1, 1) + 0.1 * np.sin(t / 3.0 + p)
        transl[:, p, 2] = 5.0 + 0.2 * np.cos(t / 5.0)
    poses = (0.2 * rng.normal(size=(n_frames, n_people, 72))).astype(np.float32)
    betas = (0.5 * rng.normal(size=(n_people, 10))).astype(np.float32)
    return {"poses": poses, "transl": transl, "betas": betas}


def write_gt(root: Path, video_id: str, arr: dict[str, np.ndarray], visible: np.ndarray | None = None) -> None:
    f, p = arr["poses"].shape[:2]
    j, _ = toy_mesh(
        arr["poses"].reshape(-1, 72), np.repeat(arr["betas"][None], f, 0).reshape(-1, 10), arr["transl"].reshape(-1, 3)
    )
    d = root / video_id
    d.mkdir(parents=True)
    np.savez(
        d / "gt.npz",
        video_id=np.array(video_id),
        fps=np.array(30.0),
        width=np.array(W),
        height=np.array(H),
        n_frames=np.array(f),
        pts=np.arange(f) / 30.0,
        K=K,
        cam_R=np.repeat(np.eye(3)[None], f, 0),
        cam_t=np.zeros((f, 3)),
        person_id=np.arange(p, dtype=np.int64) + 7,
        betas=arr["betas"],
        poses=arr["poses"],
        transl=arr["transl"],
        world_poses=arr["poses"],
        world_transl=arr["transl"],
        in_frame=np.ones((f, p), bool),
        visible_frac=(np.ones((f, p), np.float32) if visible is None else visible.astype(np.float32)),
        boxes=np.zeros((f, p, 4), np.float32),
        joints2d=np.zeros((f, p, 24, 2), np.float32),
        joints3d=j.reshape(f, p, 24, 3),
        gender=np.array("neutral"),
        body_model=np.array("synthetic"),
        body_model_sha256=np.array("0" * 64),
    )


def write_tracks(root: Path, video_id: str, rows: list[dict]) -> None:
    """rows: dicts with track_id, frame_idx, pose (72,), betas (10,), transl (3,), observed."""
    d = root / video_id
    d.mkdir(parents=True, exist_ok=True)
    n = len(rows)

    def fsl(key: str, width: int) -> pa.Array:
        flat = np.concatenate([np.asarray(r[key], np.float32) for r in rows]) if n else np.zeros(0, np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)

    table = pa.table(
        {
            "video_id": pa.array([video_id] * n, pa.string()),
            "track_id": pa.array([r["track_id"] for r in rows], pa.int64()),
            "frame_idx": pa.array([r["frame_idx"] for r in rows], pa.int64()),
            "pts_s": pa.array([r["frame_idx"] / 30.0 for r in rows], pa.float64()),
            "pose": fsl("pose", 72),
            "betas": fsl("betas", 10),
            "transl": fsl("transl", 3),
            "confidence": pa.array([1.0] * n, pa.float32()),
            "observed": pa.array([r.get("observed", True) for r in rows], pa.bool_()),
        }
    )
    pq.write_table(table, d / "tracks.parquet")


def perfect_rows(arr: dict[str, np.ndarray], track_of=lambda p, f: 100 + p, skip=lambda p, f: False) -> list[dict]:
    f_n, p_n = arr["poses"].shape[:2]
    return [
        {
            "track_id": track_of(p, f),
            "frame_idx": f,
            "pose": arr["poses"][f, p],
            "betas": arr["betas"][p],
            "transl": arr["transl"][f, p],
            "observed": True,
        }
        for p in range(p_n)
        for f in range(f_n)
        if not skip(p, f)
    ]


# ------------------------------------------------------------------ matching only
def test_assign_frame_prefers_counted_people_and_ignores_dont_care() -> None:
    iou = np.array([[0.7, 0.9], [0.0, 0.6], [0.1, 0.2]])  # 3 predictions x (counted, don't care)
    fa = assign_frame(iou, np.array([True, False]), gate=0.5)
    assert fa.pred_to_gt.tolist() == [0, 1, -1]
    assert fa.ignored.tolist() == [False, True, False]


def _boxes(n_frames: int, n_people: int) -> np.ndarray:
    x = 100.0 * np.arange(n_people)
    b = np.stack([x, np.zeros(n_people), x + 50, np.full(n_people, 100.0)], -1)
    return np.repeat(b[None], n_frames, 0)


def test_one_track_change_is_exactly_one_id_switch() -> None:
    gtb = _boxes(10, 1)
    frames = np.arange(10)
    tracks = np.where(frames < 5, 10, 11)
    vm = match_video(frames, tracks, gtb[:, 0], gtb, np.ones((10, 1), bool), np.array([3]))
    from hmrflow.jobs.evaluate.matching import tracking_metrics

    m = tracking_metrics({"v": vm.accumulator}).loc["v"]
    assert int(m["num_switches"]) == 1
    assert m["idf1"] == pytest.approx(0.5)  # best global id assignment covers 5 of 10 frames
    assert (vm.tp, vm.fp, vm.fn) == (10, 0, 0)
    assert vm.best_track[3] == (10, 5)


def test_two_people_swapping_tracks_count_one_switch_each() -> None:
    gtb = _boxes(10, 2)
    frames = np.repeat(np.arange(10), 2)
    person = np.tile([0, 1], 10)
    tracks = np.where((frames < 5) == (person == 0), 1, 2)
    vm = match_video(frames, tracks, gtb[frames, person], gtb, np.ones((10, 2), bool), np.array([0, 1]))
    from hmrflow.jobs.evaluate.matching import tracking_metrics

    assert int(tracking_metrics({"v": vm.accumulator}).loc["v", "num_switches"]) == 2


def test_false_track_and_missed_person_are_counted() -> None:
    gtb = _boxes(10, 2)
    frames = np.arange(10)
    # person 0 tracked throughout; person 1 never; one track far from anybody for 4 frames
    pf = np.concatenate([frames, frames[:4]])
    pt = np.concatenate([np.full(10, 5), np.full(4, 9)])
    pb = np.concatenate([gtb[:, 0], np.tile([[400.0, 0, 450, 100]], (4, 1))])
    vm = match_video(pf, pt, pb, gtb, np.ones((10, 2), bool), np.array([0, 1]))
    assert (vm.tp, vm.fp, vm.fn) == (10, 4, 10)
    assert vm.missed_people == [1] and vm.false_tracks == [9]
    assert vm.best_track[1] == (-1, 0)


# -------------------------------------------------------------- end to end (toy)
@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    """The CLI path uses the toy body model too."""
    monkeypatch.setattr(report_mod, "resolve_body_model", lambda body_model=None: toy_mesh)
    return toy_mesh


def test_ground_truth_scored_against_itself_is_perfect(tmp_path: Path, toy) -> None:
    arr = gt_arrays()
    write_gt(tmp_path / "gt", "clip", arr)
    write_tracks(tmp_path / "pred", "clip", perfect_rows(arr))
    rep = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy)
    r = rep.per_video.loc["clip"]
    assert (r["tp"], r["fp"], r["fn"], r["id_switches"]) == (40, 0, 0, 0)
    assert r["precision"] == r["recall"] == r["f1"] == r["idf1"] == r["mota"] == 1.0
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "cam_mpjpe_mm", "accel_mm_f2"):
        assert r[k] == pytest.approx(0.0, abs=1e-3), k
    assert r["pairs"] == 40 and r["pairs_filled"] == 0 and np.isnan(r["mpjpe_mm_filled"])
    assert r["jitter_m_s3"] == pytest.approx(r["gt_jitter_m_s3"], rel=1e-4) and r["jitter_m_s3"] > 0
    assert rep.overall["idf1"] == 1.0 and rep.overall["recall"] == 1.0
    assert rep.people["best_track"].tolist() == [100, 101]
    assert rep.people["coverage"].tolist() == [1.0, 1.0]


def test_offsets_give_known_errors_and_filled_rows_are_reported_apart(tmp_path: Path, toy) -> None:
    arr = gt_arrays()
    write_gt(tmp_path / "gt", "clip", arr)
    rows = perfect_rows(arr)
    for r in rows:
        r["transl"] = r["transl"] + np.array([0.0, 0.03, 0.04], np.float32)  # 50 mm camera-space offset
        if r["frame_idx"] >= 15:  # last 5 frames filled, with joint 5 off by 48 mm
            r["observed"] = False
            r["pose"] = r["pose"].copy()
            r["pose"][15] += 0.48
    write_tracks(tmp_path / "pred", "clip", rows)
    r = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy).per_video.loc["clip"]
    assert r["mpjpe_mm_obs"] == pytest.approx(0.0, abs=1e-3)
    assert r["cam_mpjpe_mm_obs"] == pytest.approx(50.0, abs=1e-3)
    assert r["mpjpe_mm_filled"] == pytest.approx(2.0, abs=1e-3)  # 48 mm / 24 joints
    assert r["pairs_filled"] == 10
    assert r["mpjpe_mm"] == pytest.approx(2.0 * 10 / 40, abs=1e-3)


def test_missing_predictions_lower_recall_exactly(tmp_path: Path, toy, caplog: pytest.LogCaptureFixture) -> None:
    arr = gt_arrays()
    write_gt(tmp_path / "gt", "a", arr)
    write_gt(tmp_path / "gt", "b", arr)
    # video a: person 1 not predicted in frames 0..5 (6 of 40 instances); video b: no folder
    write_tracks(tmp_path / "pred", "a", perfect_rows(arr, skip=lambda p, f: p == 1 and f < 6))
    with caplog.at_level(logging.WARNING):
        rep = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy)
    assert "every person counts as missed" in caplog.text
    a, b = rep.per_video.loc["a"], rep.per_video.loc["b"]
    assert (a["tp"], a["fn"], a["fp"]) == (34, 6, 0)
    assert a["recall"] == pytest.approx(34 / 40) and a["precision"] == 1.0
    assert (b["tp"], b["fn"], b["missed_people"]) == (0, 40, 2) and b["recall"] == 0.0
    assert rep.overall["recall"] == pytest.approx(34 / 80)
    assert rep.overall["mota"] == pytest.approx(1 - 46 / 80)
    assert rep.overall["frames"] == 40


def test_false_track_is_counted_as_false_positives(tmp_path: Path, toy) -> None:
    arr = gt_arrays()
    write_gt(tmp_path / "gt", "clip", arr)
    rows = perfect_rows(arr)
    ghost = {
        "pose": np.zeros(72, np.float32),
        "betas": np.zeros(10, np.float32),
        "transl": np.array([0.0, 0, 8.0], np.float32),
    }
    rows += [{"track_id": 55, "frame_idx": f, **ghost} for f in range(8)]
    write_tracks(tmp_path / "pred", "clip", rows)
    r = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy).per_video.loc["clip"]
    assert (r["tp"], r["fp"], r["false_tracks"]) == (40, 8, 1)
    assert r["precision"] == pytest.approx(40 / 48) and r["recall"] == 1.0
    assert r["mot_false_positives"] == 8 and r["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)


def test_dont_care_people_are_neither_misses_nor_false_positives(tmp_path: Path, toy) -> None:
    arr = gt_arrays()
    vis = np.ones((20, 2))
    vis[:10, 1] = 0.1  # person 1 mostly hidden in frames 0..9
    write_gt(tmp_path / "gt", "clip", arr, visible=vis)
    # predicted there (filled) and also missing in frames 0..4
    rows = perfect_rows(arr, skip=lambda p, f: p == 1 and f < 5)
    for r in rows:
        if r["track_id"] == 101 and r["frame_idx"] < 10:
            r["observed"] = False
    write_tracks(tmp_path / "pred", "clip", rows)
    r = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy, visibility=0.3).per_video.loc["clip"]
    assert r["gt_instances"] == 30
    assert (r["tp"], r["fp"], r["fn"], r["ignored"]) == (30, 0, 0, 5)
    assert r["recall"] == 1.0 and r["precision"] == 1.0
    assert r["pairs"] == 35 and r["pairs_filled"] == 5  # pose is scored on don't-care matches too


def test_report_json_and_markdown(tmp_path: Path, toy) -> None:
    arr = gt_arrays(n_frames=8)
    write_gt(tmp_path / "gt", "clip", arr)
    write_tracks(tmp_path / "pred", "clip", perfect_rows(arr))
    rep = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy)
    d = json.loads(rep.to_json())
    assert d["videos"][0]["video_id"] == "clip" and d["overall"]["idf1"] == 1.0
    assert d["overall"]["mpjpe_mm_filled"] is None  # NaN -> null
    md = rep.to_markdown().splitlines()
    assert md[0].startswith("| video_id | frames |") and md[2].startswith("| clip | 8 |")
    assert md[-1].startswith("| overall | 8 | 2 | 2 | 1.000 | 1.000 |")


def test_cli_prints_table_json_and_writes_file(tmp_path: Path, toy, capsys: pytest.CaptureFixture[str]) -> None:
    arr = gt_arrays(n_frames=6)
    write_gt(tmp_path / "gt", "clip", arr)
    write_tracks(tmp_path / "pred", "clip", perfect_rows(arr))
    out = tmp_path / "rep.json"
    assert cli.main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["overall"]["recall"] == 1.0
    assert json.loads(out.read_text())["overall"]["tp"] == 12
    assert cli.main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 0
    assert "| overall |" in capsys.readouterr().out


def test_bad_folders_give_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", str(tmp_path / "nope"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "prediction folder not found" in err and len(err.splitlines()) == 1
    (tmp_path / "pred").mkdir()
    assert cli.main(["eval", str(tmp_path / "pred"), str(tmp_path)]) == 2
    assert "no <video_id>/gt.npz" in capsys.readouterr().err
    with pytest.raises(EvalInputError):
        evaluate(tmp_path / "pred", tmp_path / "missing")


def test_malformed_tracks_file_names_file_and_column(tmp_path: Path, toy) -> None:
    arr = gt_arrays(n_frames=4)
    write_gt(tmp_path / "gt", "clip", arr)
    (tmp_path / "pred" / "clip").mkdir(parents=True)
    pq.write_table(pa.table({"track_id": pa.array([1], pa.int64())}), tmp_path / "pred" / "clip" / "tracks.parquet")
    with pytest.raises(EvalInputError, match=r"tracks.parquet: missing columns \['frame_idx'"):
        evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy)


def test_real_synthetic_body_model_self_evaluation(tmp_path: Path) -> None:
    """With hmrflow's synthetic body model (when installed): GT against itself is perfect."""
    bm = pytest.importorskip("hmrflow.priors.body_model")
    from hmrflow.jobs.evaluate.loading import TorchBodyModelFn

    fn = TorchBodyModelFn(bm.load_body_model(kind="synthetic", gender="neutral", device="cpu"))
    arr = gt_arrays(n_frames=6)
    arr["poses"] *= 0.5
    write_gt(tmp_path / "gt", "clip", arr)
    write_tracks(tmp_path / "pred", "clip", perfect_rows(arr))
    rep = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=fn)
    r = rep.per_video.loc["clip"]
    assert r["recall"] == 1.0 and r["idf1"] == 1.0
    assert r["mpjpe_mm"] == pytest.approx(0.0, abs=1e-2) and r["pve_mm"] == pytest.approx(0.0, abs=1e-2)


def test_predictions_are_boxed_with_their_own_recorded_camera(tmp_path: Path, toy) -> None:
    """A pipeline that assumed a 3x longer focal puts people 3x deeper: same pixels, so it
    must match once its manifest records that camera (and not without it)."""
    arr = gt_arrays()
    write_gt(tmp_path / "gt", "clip", arr)
    far = {**arr, "transl": arr["transl"] * np.array([1.0, 1.0, 3.0], np.float32)}
    write_tracks(tmp_path / "pred", "clip", perfect_rows(far))
    blind = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy).per_video.loc["clip"]
    assert blind["recall"] < 0.5  # boxed with the GT focal the deep bodies are a third of the size
    cam = {
        "model": "pinhole",
        "focal_px": 3 * float(K[0, 0]),
        "cx": float(K[0, 2]) / 2,
        "cy": float(K[1, 2]) / 2,
        "width": W // 2,
        "height": H // 2,
    }  # decoded at half resolution: rescaled to GT pixels
    (tmp_path / "pred" / "clip" / "manifest.json").write_text(
        json.dumps({"camera": {**cam, "focal_px": cam["focal_px"] / 2}})
    )
    seen = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy).per_video.loc["clip"]
    assert seen["recall"] == 1.0 and seen["precision"] == 1.0
    assert seen["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)


# ------------------------------------------------- one track per person (identity)
def _match(rows: list[tuple[int, int, list[float]]], gt: np.ndarray, counted: np.ndarray | None = None, gate=0.5):
    """rows: (frame, track, box); gt: (F, P, 4) -> VideoMatching."""
    f, t, b = (np.array(x) for x in zip(*rows)) if rows else (np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4)))
    counted = np.ones(gt.shape[:2], bool) if counted is None else counted
    return match_video(f, t, b, gt, counted, np.arange(gt.shape[1]) + 7, gate=gate)


A, B = [0.0, 0.0, 50.0, 100.0], [300.0, 0.0, 350.0, 100.0]


def test_fragments_count_distinct_tracks_per_matched_person() -> None:
    gt = np.array([[A, B, [600.0, 0, 630, 60]]] * 10)  # third person never predicted
    rows = [(f, 10 if f < 5 else 11, A) for f in range(10)] + [(f, 20, B) for f in range(10)]
    ic = _match(rows, gt).identity
    assert (ic.matched_people, ic.person_track_ids, ic.fragmented_people) == (2, 3, 1)
    assert ic.fragments_per_person == pytest.approx(1.5)
    vm = _match(rows, gt)
    assert vm.person_tracks == {7: 2, 8: 1, 9: 0}


def test_fragments_ignore_matches_to_dont_care_frames() -> None:
    gt = np.array([[A]] * 10)
    counted = np.ones((10, 1), bool)
    counted[6:] = False  # person hidden: a new track there is not a fragment of a counted person
    rows = [(f, 1 if f < 6 else 2, A) for f in range(10)]
    ic = _match(rows, gt, counted).identity
    assert (ic.matched_people, ic.person_track_ids, ic.fragmented_people) == (1, 1, 0)
    assert ic.matched_frames == 6


def test_duplicate_frames_need_an_unmatched_second_box_on_the_person() -> None:
    gt = np.array([[A, B]] * 10)
    rows = [(f, 1, A) for f in range(10)] + [(f, 2, B) for f in range(10)]
    rows += [(f, 9, [0.0, 0.0, 50.0, 90.0]) for f in range(4)]  # IoU 0.9 with A: duplicate
    rows += [(f, 8, [0.0, 0.0, 50.0, 40.0]) for f in range(6)]  # IoU 0.4 with A: not one
    ic = _match(rows, gt).identity
    assert (ic.duplicate_frames, ic.matched_frames) == (4, 20)
    assert ic.duplicate_frac == pytest.approx(0.2)
    assert _match(rows, gt).person_duplicates == {7: 4, 8: 0}


def test_box_matched_to_another_person_is_not_a_duplicate() -> None:
    # two people whose boxes overlap (IoU 0.6); each has its own track: no duplicate
    other = [0.0, 0.0, 50.0, 60.0]
    gt = np.array([[A, other]] * 5)
    rows = [(f, 1, A) for f in range(5)] + [(f, 2, other) for f in range(5)]
    assert _match(rows, gt).identity.duplicate_frames == 0
    # same when the second person is don't-care (its box is matched to it, so not free)
    counted = np.array([[True, False]] * 5)
    assert _match(rows, gt, counted).identity.duplicate_frames == 0


def test_a_box_over_two_people_is_not_a_duplicate() -> None:
    # person C, hidden behind A (don't-care), keeps a track whose box lies over A (IoU 0.55) and
    # over C (IoU 0.4, under the match gate): it is C's imprecise track, not a second track on A
    c = [10.0, 0.0, 60.0, 90.0]
    gt = np.array([[A, c]] * 4)
    counted = np.array([[True, False]] * 4)
    free = [0.0, 0.0, 50.0, 55.0]
    from hmrflow.pipeline.boxes import box_iou

    iou = box_iou(np.array([free]), np.array([A, c]))[0]
    assert iou[0] >= 0.5 and 0.3 <= iou[1] < 0.5
    rows = [(f, 1, A) for f in range(4)] + [(f, 2, free) for f in range(4)]
    assert _match(rows, gt, counted).identity.duplicate_frames == 0


def test_unmatched_person_has_no_duplicate_even_if_boxes_overlap_it() -> None:
    # with a 0.7 gate a 0.6-IoU box is not a match; nothing is matched, nothing is a duplicate
    gt = np.array([[A]] * 3)
    rows = [(f, 1, [0.0, 0.0, 50.0, 60.0]) for f in range(3)]
    ic = _match(rows, gt, gate=0.7).identity
    assert (ic.matched_frames, ic.duplicate_frames) == (0, 0)
    assert np.isnan(ic.duplicate_frac) and np.isnan(ic.fragments_per_person)


def test_recall_overlap_counts_only_overlapping_counted_people() -> None:
    near = [25.0, 0.0, 75.0, 100.0]  # IoU 1/3 with A
    gt = np.array([[A, near]] * 5 + [[A, B]] * 5)
    rows = [(f, 1, A) for f in range(10)]
    rows += [(f, 2, near) for f in (0, 1)] + [(f, 2, B) for f in range(5, 10)]
    ic = _match(rows, gt).identity
    assert (ic.overlap_instances, ic.overlap_matched) == (10, 7)
    assert ic.recall_overlap == pytest.approx(0.7)
    # an overlapping don't-care person makes nobody an overlap instance
    counted = np.ones((10, 2), bool)
    counted[:5, 1] = False
    ic = _match(rows, gt, counted).identity
    assert (ic.overlap_instances, ic.overlap_matched) == (0, 0) and np.isnan(ic.recall_overlap)


def test_identity_measures_on_empty_inputs_are_nan_not_errors() -> None:
    ic = _match([], np.array([[A, B]] * 3)).identity
    assert ic.overlap_instances == 0 and np.isnan(ic.recall_overlap)
    assert ic.matched_people == 0 and np.isnan(ic.fragments_per_person) and np.isnan(ic.duplicate_frac)
    ic = _match([], np.zeros((3, 0, 4))).identity  # a clip without people
    assert ic == type(ic)()


def test_identity_columns_in_report_and_overall_pools_people(tmp_path: Path, toy) -> None:
    arr2, arr1 = gt_arrays(n_people=2), gt_arrays(n_people=1)
    write_gt(tmp_path / "gt", "a", arr2)
    write_gt(tmp_path / "gt", "b", arr1)
    # video a: person 0 split into tracks 100 / 200 at frame 10; video b: one track
    write_tracks(
        tmp_path / "pred", "a", perfect_rows(arr2, track_of=lambda p, f: 100 + p + (100 if p == 0 and f >= 10 else 0))
    )
    write_tracks(tmp_path / "pred", "b", perfect_rows(arr1))
    rep = evaluate(tmp_path / "pred", tmp_path / "gt", body_model=toy)
    a, b = rep.per_video.loc["a"], rep.per_video.loc["b"]
    assert a["fragments_per_person"] == pytest.approx(1.5) and a["fragmented_people"] == 1
    assert b["fragments_per_person"] == 1.0 and b["duplicate_frames"] == 0 and b["duplicate_frac"] == 0.0
    assert rep.overall["fragments_per_person"] == pytest.approx(4 / 3)  # 4 ids over 3 people, not (1.5 + 1) / 2
    assert rep.overall["fragmented_people"] == 1
    assert rep.people.set_index("person_id").loc[7, "track_ids"].tolist() == [2, 1]
    d = json.loads(rep.to_json())
    assert d["overall"]["recall_overlap"] is None and d["overall"]["overlap_instances"] == 0  # people 3 m apart
    assert d["videos"][0]["fragments_per_person"] == 1.5
    header = rep.to_markdown().splitlines()[0]
    for col in ("fragments_per_person", "fragmented_people", "duplicate_frac", "recall_overlap"):
        assert col in header


def test_track_bench_scores_fragments_and_duplicates_from_row_identities() -> None:
    import dataclasses

    from hmrflow.jobs.bench.track_eval import identity_counts, score
    from hmrflow.pipeline.types import MeshEstimates
    from hmrflow.stages.track.simulate import SimResult

    near_a = [0.0, 0.0, 50.0, 90.0]  # IoU 0.9 with A
    rows = [(f, 0, 1 if f < 3 else 2, A) for f in range(6)]  # person 0: two tracks
    rows += [(f, 1, 5 if f < 5 else -1, B) for f in range(6)]  # person 1: one track, last row dropped
    rows += [(0, -1, 7, near_a), (1, -1, 7, near_a)]  # a false detection kept on person 0: duplicates
    rows += [(2, -1, -1, near_a)]  # dropped by the tracker: no duplicate
    rows += [(4, -1, 8, [600.0, 0, 640, 40])]  # a false track elsewhere: no duplicate
    frame, gt, track, boxes = (np.array(x) for x in zip(*rows))
    est = dataclasses.replace(
        MeshEstimates.empty("v", len(rows)),
        frame_idx=frame.astype(np.int64),
        boxes_xyxy=boxes.astype(np.float32),
        pts=frame / 30.0,
    )
    sim = SimResult(est=est, gt_id=gt.astype(np.int64))
    ic = identity_counts(sim, track.astype(np.int64))
    assert (ic.matched_people, ic.person_track_ids, ic.fragmented_people) == (2, 3, 1)
    assert (ic.matched_frames, ic.duplicate_frames) == (11, 2)
    s = score(sim, track.astype(np.int64))
    assert s["fragments_per_person"] == pytest.approx(1.5) and s["fragmented_people"] == 1.0
    assert s["duplicate_frames"] == 2.0 and s["duplicate_frac"] == pytest.approx(2 / 11)
