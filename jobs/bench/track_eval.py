"""Tracker benchmark on simulated estimator output: IDF1 / MOTA / ID switches per scene.

Run::

    hmrflow bench track [--seeds 3] [--set key=value ...]

The ground truth is the set of true detections the tracker receives (people it could
see), so the figures measure identity assignment only: a dropped true row is a miss,
a false detection that ends up in a track is a false positive.  Scenes come from
:mod:`hmrflow.stages.track.simulate` (crossing, occlusions up to 2 s, leaving and
re-entering, crowds of 4-6 people, variable frame rate, subsampling).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hmrflow.jobs.evaluate.matching import IdentityCounts, duplicated_people, track_ids_per_person
from hmrflow.pipeline.boxes import box_iou
from hmrflow.pipeline.config import TrackConfig
from hmrflow.stages.track.simulate import (
    PersonPath,
    SimNoise,
    SimResult,
    crossing_people,
    crowd,
    leave_and_return,
    regular_pts,
    simulate,
    vfr_pts,
)
from hmrflow.stages.track.tracker import track_video

log = logging.getLogger(__name__)

NOISE = SimNoise(false_pos_per_frame=0.05, miss_prob=0.03)
#: People who look alike, worse depth, more misses and false detections.
HARD = SimNoise(
    false_pos_per_frame=0.2, miss_prob=0.1, betas_spread=0.4, betas=0.3, root_depth_rel=0.1, box_rel=0.04, pose_rad=0.15
)


@dataclass(frozen=True)
class Scene:
    """A named scene: ``make(seed)`` returns the simulated estimates."""

    name: str
    make: Callable[[int], SimResult]


def _occlusion(hidden_s: float) -> Callable[[int], SimResult]:
    def make(seed: int) -> SimResult:
        rng = np.random.default_rng(seed)
        people = [
            PersonPath(0, ((0.0, -2.0, 5.0), (8.0, 2.0, 5.5)), hidden=((3.0, 3.0 + hidden_s),)),
            PersonPath(1, ((0.0, 1.5, 6.5), (8.0, -1.5, 6.0))),
            PersonPath(2, ((0.0, rng.uniform(-1, 1), 8.0), (8.0, rng.uniform(-1, 1), 4.5))),
        ]
        return simulate(people, regular_pts(8.0, 30), NOISE, seed=seed)

    return make


def _crowd(n: int, pts_kind: str = "30fps", noise: SimNoise = NOISE) -> Callable[[int], SimResult]:
    def make(seed: int) -> SimResult:
        rng = np.random.default_rng(1000 + seed)
        if pts_kind == "vfr":
            pts = vfr_pts(10.0, 20, rng)
            fidx = None
        elif pts_kind == "sub10":
            pts = regular_pts(10.0, 30)[::3]
            fidx = 3 * np.arange(len(pts))
        else:
            pts, fidx = regular_pts(10.0, 30), None
        return simulate(crowd(n, 10.0, seed), pts, noise, seed=seed, frame_idx=fidx)

    return make


SCENES: tuple[Scene, ...] = (
    Scene("crossing", lambda s: simulate(crossing_people(), regular_pts(6.0, 30), NOISE, seed=s)),
    Scene("crossing_diag", lambda s: simulate(crossing_people(same_depth=True), regular_pts(6.0, 30), NOISE, seed=s)),
    Scene("occlusion_1.5s", _occlusion(1.5)),
    Scene("occlusion_1.9s", _occlusion(1.9)),
    Scene("leave_return_1.5s", lambda s: simulate(leave_and_return(1.5), regular_pts(8.0, 30), NOISE, seed=s)),
    Scene("crowd4", _crowd(4)),
    Scene("crowd5", _crowd(5)),
    Scene("crowd6", _crowd(6)),
    Scene("crowd5_vfr", _crowd(5, "vfr")),
    Scene("crowd5_10fps", _crowd(5, "sub10")),
    Scene("crowd5_hard", _crowd(5, noise=HARD)),
    Scene(
        "crossing_diag_hard", lambda s: simulate(crossing_people(same_depth=True), regular_pts(6.0, 30), HARD, seed=s)
    ),
)


def split_at_gaps(gt_id: np.ndarray, pts: np.ndarray, gap_s: float) -> np.ndarray:
    """(N,) ground-truth ids where a person unseen for more than ``gap_s`` becomes a new id.

    That is what the tracker is specified to do (a new track after ``reid_window_s``), so
    scoring against these ids counts only the switches that the specification forbids.
    """
    out = np.full_like(gt_id, -1)
    next_id = 0
    for g in np.unique(gt_id[gt_id >= 0]):
        rows = np.flatnonzero(gt_id == g)
        rows = rows[np.argsort(pts[rows], kind="stable")]
        seg = np.cumsum(np.r_[0, np.diff(pts[rows]) > gap_s])
        out[rows] = next_id + seg
        next_id += int(seg[-1]) + 1
    return out


def identity_counts(sim: SimResult, track_id: np.ndarray, gt_id: np.ndarray | None = None) -> IdentityCounts:
    """Fragments and duplicates of ``track_id`` (N,) against ``gt_id`` (N,), as ``hmrflow eval``
    defines them (:mod:`hmrflow.jobs.evaluate.matching`).

    Every estimate row knows its person, so a row of person g kept in track t (t >= 0) is a
    match of g to t; a kept row of a false detection (gt -1) is matched to nobody.  A
    duplicate frame is a person-frame matched to a track while another kept false
    detection's box has IoU >= 0.5 with the person's box.  The overlap fields stay 0.
    """
    est = sim.est
    gt_all = sim.gt_id if gt_id is None else gt_id
    kept = (gt_all >= 0) & (track_id >= 0)
    n_ids = track_ids_per_person(gt_all[kept], track_id[kept])
    duplicates = 0
    for f in np.unique(est.frame_idx):
        rows = np.flatnonzero(est.frame_idx == f)
        g = rows[gt_all[rows] >= 0]
        h = rows[track_id[rows] >= 0]
        # a kept row of a person is matched to that person's column; false detections to none
        col = {int(r): k for k, r in enumerate(g)}
        pred_to_gt = np.array([col.get(int(r), -1) for r in h], np.int64)
        iou = box_iou(est.boxes_xyxy[h], est.boxes_xyxy[g])
        duplicates += int(duplicated_people(iou, pred_to_gt, np.ones(len(g), bool)).sum())
    return IdentityCounts(
        matched_people=len(n_ids),
        person_track_ids=sum(n_ids.values()),
        fragmented_people=sum(v > 1 for v in n_ids.values()),
        matched_frames=int(kept.sum()),
        duplicate_frames=duplicates,
    )


def score(sim: SimResult, track_id: np.ndarray, gt_id: np.ndarray | None = None) -> dict[str, float]:
    """motmetrics IDF1, MOTA, ID switches, FP, FN of ``track_id`` (N,) against ``gt_id``, and
    the identity measures of :func:`identity_counts` (fragments_per_person,
    fragmented_people, duplicate_frames, duplicate_frac).

    gt_id: (N,) ground truth, default ``sim.gt_id`` (-1 = false detection).
    """
    import motmetrics as mm

    est = sim.est
    gt_all = sim.gt_id if gt_id is None else gt_id
    acc = mm.MOTAccumulator(auto_id=False)
    for f in np.unique(est.frame_idx):
        rows = np.flatnonzero(est.frame_idx == f)
        g = rows[gt_all[rows] >= 0]
        h = rows[track_id[rows] >= 0]
        # motmetrics 1.4's iou_matrix calls np.asfarray (gone in NumPy 2): same distance here
        dist = 1.0 - box_iou(est.boxes_xyxy[g], est.boxes_xyxy[h])
        dist[dist > 0.5] = np.nan
        acc.update(gt_all[g].tolist(), track_id[h].tolist(), dist, frameid=int(f))
    mh = mm.metrics.create()
    s = mh.compute(
        acc,
        metrics=["idf1", "mota", "num_switches", "num_false_positives", "num_misses", "num_unique_objects"],
        name="x",
    )
    out = {k: float(s[k].iloc[0]) for k in s.columns}
    ic = identity_counts(sim, track_id, gt_all)
    out.update(
        fragments_per_person=ic.fragments_per_person,
        fragmented_people=float(ic.fragmented_people),
        duplicate_frames=float(ic.duplicate_frames),
        duplicate_frac=ic.duplicate_frac,
    )
    return out


def run_scenes(cfg: TrackConfig, seeds: int) -> list[dict[str, float | str]]:
    """Score every scene over ``seeds`` seeds; one row of means per scene."""
    table = []
    for scene in SCENES:
        per = []
        for seed in range(seeds):
            sim = scene.make(seed)
            ids, stats = track_video(sim.est, cfg)
            m = score(sim, ids)
            spec = score(sim, ids, split_at_gaps(sim.gt_id, sim.est.pts, cfg.reid_window_s))
            m["idf1_spec"] = spec["idf1"]
            m["switches_spec"] = spec["num_switches"]
            m["tracks"] = stats.n_tracks_kept
            m["people"] = len(np.unique(sim.gt_id[sim.gt_id >= 0]))
            per.append(m)
        row: dict[str, float | str] = {"scene": scene.name}
        for k in per[0]:
            row[k] = float(np.mean([p[k] for p in per]))
        row["max_switches"] = float(max(p["num_switches"] for p in per))
        row["max_switches_spec"] = float(max(p["switches_spec"] for p in per))
        table.append(row)
    return table


def format_table(table: list[dict[str, float | str]]) -> str:
    """Fixed-width text table of :func:`run_scenes`'s rows plus a mean row."""
    head = (
        f"{'scene':<20}{'IDF1':>7}{'MOTA':>7}{'IDsw':>6}{'maxIDsw':>8}{'FP':>6}{'FN':>6}{'tracks':>8}"
        f"{'people':>7}{'IDF1*':>7}{'IDsw*':>7}{'maxIDsw*':>9}{'frag':>6}{'fragP':>6}{'dup':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in table:
        lines.append(
            f"{r['scene']:<20}{r['idf1']:>7.3f}{r['mota']:>7.3f}{r['num_switches']:>6.2f}{r['max_switches']:>8.0f}"
            f"{r['num_false_positives']:>6.1f}{r['num_misses']:>6.1f}{r['tracks']:>8.2f}{r['people']:>7.2f}"
            f"{r['idf1_spec']:>7.3f}{r['switches_spec']:>7.2f}{r['max_switches_spec']:>9.0f}"
            f"{r['fragments_per_person']:>6.2f}{r['fragmented_people']:>6.2f}{r['duplicate_frames']:>6.1f}"
        )
    lines.append("-" * len(head))
    mean = lambda k: float(np.mean([r[k] for r in table]))  # noqa: E731
    lines.append(
        f"{'mean':<20}{mean('idf1'):>7.3f}{mean('mota'):>7.3f}{mean('num_switches'):>6.2f}{'':>8}{'':>6}"
        f"{'':>6}{'':>8}{'':>7}{mean('idf1_spec'):>7.3f}{mean('switches_spec'):>7.2f}{'':>9}"
        f"{mean('fragments_per_person'):>6.2f}{mean('fragmented_people'):>6.2f}{mean('duplicate_frames'):>6.1f}"
    )
    lines.append(
        "* = ground truth split where a person is unseen for more than reid_window_s "
        "(a new id there is the specified behaviour)\n"
        "frag = distinct track ids per person, fragP = people with more than one, "
        "dup = person-frames with a second track on the person (means over seeds; unsplit ground truth)"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scene")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrackConfig override")


def run(args: argparse.Namespace) -> int:
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = float(v) if "." in v or "e" in v else int(v)
    cfg = TrackConfig(**overrides)
    sys.stdout.write(format_table(run_scenes(cfg, args.seeds)) + "\n")
    return 0
