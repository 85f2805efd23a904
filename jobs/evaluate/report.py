"""Score a folder of hmrflow outputs against a folder of synthetic ground truth.

``evaluate(pred_dir, gt_dir)`` returns an :class:`EvalReport`: one row per video and an
overall row.  What the columns mean (units in the names: ``_mm`` millimetres,
``_mm_f2`` mm/frame^2, ``_m_s3`` m/s^3):

* frames, gt_people, tracks: ground-truth frames and people, predicted track ids.
* gt_instances: (frame, person) pairs that count (``visible_frac >= visibility``);
  less visible people are "don't care": never misses, and predictions matched to
  them are not false positives.
* tp, fp, fn, ignored, precision, recall, f1: detection at box IoU >= ``iou_threshold``
  (boxes = projected meshes, see :mod:`.matching`); ignored = matched to don't-care.
* missed_people: people counted somewhere but never matched; false_tracks: predicted
  tracks none of whose rows matched anybody.
* idf1, mota, id_switches, mot_misses, mot_false_positives: motmetrics (CLEAR MOT, ID).
* pairs, pairs_filled: matched (frame, person) pairs scored for pose (including
  matches to don't-care people, where refinement-filled frames mostly are), and how
  many of them come from filled rows (``observed`` False).
* mpjpe_mm (pelvis-aligned), pa_mpjpe_mm, pve_mm, cam_mpjpe_mm (no alignment),
  accel_mm_f2: means over pairs; the same with suffix ``_obs`` / ``_filled`` for
  observed / filled rows only (NaN when there are none).
* jitter_m_s3: mean jerk norm of predicted tracks (camera frame); gt_jitter_m_s3 the
  same for the ground truth, for reference.
* One track per person (counted people, the matches above; see :mod:`.matching`):
  fragments_per_person = mean over people matched at least once of their distinct matched
  track ids (ideal 1.0), fragmented_people = those with more than one (matched_people and
  person_track_ids are the sums behind the mean); duplicate_frames = matched person-frames
  where a prediction matched to nobody has IoU >= 0.5 with the person's box (a second track
  on one person), duplicate_frac = duplicate_frames / tp; recall_overlap = recall over
  the overlap_instances counted person-frames whose box has IoU >= 0.3 with another
  counted person's (overlap_matched of them matched).  Ratios with a zero denominator
  are NaN.

The overall row sums the counts, recomputes the ratios from the sums (fragments_per_person
over all matched people of all videos), takes IDF1 and
MOTA from motmetrics' merged accumulators, and averages every error over all pairs
of all videos (so longer and more crowded videos weigh more: frame-weighted).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmrflow.jobs.evaluate import world as W
from hmrflow.jobs.evaluate.loading import (
    TRACKS_FILE,
    EvalInputError,
    GroundTruth,
    MeshFn,
    Predictions,
    find_gt_videos,
    load_ground_truth,
    load_predictions,
    resolve_body_model,
)
from hmrflow.jobs.evaluate.matching import IdentityCounts, match_video, tracking_metrics
from hmrflow.priors import metrics as M

log = logging.getLogger(__name__)

POSE_METRICS = ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "cam_mpjpe_mm", "accel_mm_f2")
#: columns shown by :meth:`EvalReport.to_markdown` by default
SUMMARY_COLUMNS = (
    "frames",
    "gt_people",
    "tracks",
    "precision",
    "recall",
    "f1",
    "fp",
    "fn",
    "missed_people",
    "false_tracks",
    "idf1",
    "mota",
    "id_switches",
    "fragments_per_person",
    "fragmented_people",
    "duplicate_frac",
    "recall_overlap",
    "pairs",
    "mpjpe_mm",
    "pa_mpjpe_mm",
    "pve_mm",
    "accel_mm_f2",
    "mpjpe_mm_filled",
    "jitter_m_s3",
)
RATIO_COLUMNS = {
    "precision",
    "recall",
    "f1",
    "idf1",
    "mota",
    "coverage",
    "fragments_per_person",
    "duplicate_frac",
    "recall_overlap",
}
OVERALL = "overall"


@dataclass
class VideoEval:
    """Per-video result: its table row, per-sample errors and identity sums (for the overall
    row), people."""

    row: dict[str, Any]
    samples: dict[str, np.ndarray]
    people: list[dict[str, Any]]
    identity: IdentityCounts
    accumulator: object = field(repr=False)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _pose_samples(
    gt: GroundTruth, pred: Predictions, pr: np.ndarray, pf: np.ndarray, pg: np.ndarray
) -> dict[str, np.ndarray]:
    """Errors of matched pairs: rows pr of pred vs (frame pf, person pg) of gt -> per-pair arrays."""
    pj = pred.joints[pr].astype(np.float64)
    gj = gt.joints[pf, pg].astype(np.float64)
    s: dict[str, np.ndarray] = {"observed": pred.observed[pr]}
    if len(pr) == 0:
        for k in POSE_METRICS:
            s[k] = np.zeros(0)
        s["accel_observed"] = np.zeros(0, bool)
        return s
    s["mpjpe_mm"] = M.mpjpe(pj, gj, align="pelvis")
    s["cam_mpjpe_mm"] = M.mpjpe(pj, gj, align="none")
    s["pa_mpjpe_mm"] = M.pa_mpjpe(pj, gj)
    if pred.vertices.shape[1:] == gt.vertices.shape[2:]:
        s["pve_mm"] = M.pve(pred.vertices[pr], gt.vertices[pf, pg], pj[:, M.PELVIS], gj[:, M.PELVIS])
    else:
        log.warning("%s: predicted and ground-truth meshes differ in size; PVE not computed", gt.video_id)
        s["pve_mm"] = np.full(len(pr), np.nan)
    # acceleration error per person over runs of consecutive frames with the same track
    acc, acc_obs = [], []
    for p in np.unique(pg):
        sel = np.nonzero(pg == p)[0]
        sel = sel[np.argsort(pf[sel], kind="stable")]
        key = pred.track_id[pr[sel]]
        acc.append(M.accel_error(pj[sel], gj[sel], frame_idx=pf[sel], key=key))
        acc_obs.append(pred.observed[pr[sel]][M.accel_centres(pf[sel], key)])
    s["accel_mm_f2"] = np.concatenate(acc)
    s["accel_observed"] = np.concatenate(acc_obs).astype(bool)
    return s


def _split(samples: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of every pose metric: over all pairs, observed-only and filled-only."""
    out: dict[str, float] = {}
    for k in POSE_METRICS:
        v = samples[k]
        obs = samples["accel_observed"] if k == "accel_mm_f2" else samples["observed"]
        out[k] = _mean(v)
        out[k + "_obs"] = _mean(v[obs])
        out[k + "_filled"] = _mean(v[~obs])
    return out


def _jitter_samples(gt: GroundTruth, pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Jerk samples (m/s^3) of the predicted tracks and of the ground-truth people."""
    fps = gt.fps if gt.fps > 0 else 1.0
    pj = [
        M.jitter(pred.joints[pred.track_id == t], pred.frame_idx[pred.track_id == t], fps)
        for t in np.unique(pred.track_id)
    ]
    gj = [M.jitter(gt.joints[:, p], fps=fps) for p in range(gt.joints.shape[1])]
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return cat(pj), cat(gj)


def _world_samples(gt: GroundTruth, pred: Predictions, vm: Any, camera: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """World-frame samples of a video (:mod:`.world`): per segment, per contact, per walking person, per video."""
    s: dict[str, np.ndarray] = {k: np.zeros(0) for k in W.WORLD_METRICS + ("speed_err_pct",)}
    cam = W.camera_errors(camera, gt.K, gt.height, gt.cam_R0)
    s["fov_err_deg"] = np.array([cam["fov_err_deg"]])
    s["gravity_err_deg"] = np.array([cam["gravity_err_deg"]])
    if gt.world_joints is None or pred.world_joints is None or not len(vm.pair_pred):
        return s
    acc: dict[str, list] = {k: [] for k in s if k not in ("fov_err_deg", "gravity_err_deg")}
    fps = gt.fps if gt.fps > 0 else 30.0
    for p, pid in enumerate(gt.person_id.tolist()):
        best, _ = vm.best_track[pid]
        sel = np.nonzero((vm.pair_gt == p) & (pred.track_id[vm.pair_pred] == best))[0]
        if not len(sel):
            continue
        sel = sel[np.argsort(vm.pair_frame[sel], kind="stable")]
        frames = vm.pair_frame[sel]
        res = W.person_world(pred.world_joints[vm.pair_pred[sel]], gt.world_joints[frames, p], frames, fps)
        for k in ("wa_mpjpe_mm", "w_mpjpe_mm", "rte_pct"):
            acc[k].append(np.asarray(res[k], np.float64))
        acc["foot_skate_mm"].append(res["foot_skate_mm"])
        if np.isfinite(res["speed_true"]) and res["speed_true"] >= W.WALKING_MPS:
            acc["speed_err_pct"].append(
                np.array([abs(res["speed_pred"] - res["speed_true"]) / res["speed_true"] * 100])
            )
    for k, v in acc.items():
        s[k] = np.concatenate(v) if v else np.zeros(0)
    return s


def evaluate_video(
    gt: GroundTruth,
    pred: Predictions,
    visibility: float = 0.3,
    iou_threshold: float = 0.5,
    camera: dict[str, Any] | None = None,
) -> VideoEval:
    """Score one video's predictions against its ground truth (see the module doc).

    camera: the prediction's manifest ``camera`` entry (field of view and gravity errors).
    """
    counted = gt.visible_frac >= visibility
    vm = match_video(pred.frame_idx, pred.track_id, pred.boxes, gt.boxes, counted, gt.person_id, gate=iou_threshold)
    samples = _pose_samples(gt, pred, vm.pair_pred, vm.pair_frame, vm.pair_gt)
    samples["jitter_m_s3"], samples["gt_jitter_m_s3"] = _jitter_samples(gt, pred)
    samples.update(_world_samples(gt, pred, vm, camera))
    precision, recall, f1 = M.precision_recall_f1(vm.tp, vm.fp, vm.fn)
    row: dict[str, Any] = {
        "video_id": gt.video_id,
        "frames": gt.n_frames,
        "gt_people": len(gt.person_id),
        "tracks": int(len(np.unique(pred.track_id))),
        "pred_rows": len(pred),
        "gt_instances": int(counted.sum()),
        "tp": vm.tp,
        "fp": vm.fp,
        "fn": vm.fn,
        "ignored": vm.ignored,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "missed_people": len(vm.missed_people),
        "false_tracks": len(vm.false_tracks),
        "pairs": len(vm.pair_pred),
        "pairs_filled": int((~samples["observed"]).sum()),
        **vm.identity.row(),
    }
    row.update(_split(samples))
    row["jitter_m_s3"] = _mean(samples["jitter_m_s3"])
    row["gt_jitter_m_s3"] = _mean(samples["gt_jitter_m_s3"])
    row.update(_world_row(samples))
    people = []
    for p, pid in enumerate(gt.person_id.tolist()):
        best, _ = vm.best_track[pid]
        sel = (vm.pair_gt == p) & (pred.track_id[vm.pair_pred] == best) if len(vm.pair_pred) else np.zeros(0, bool)
        rows, frames = vm.pair_pred[sel], vm.pair_frame[sel]
        n_counted = vm.counted_frames[pid]
        covered = int(counted[frames, p].sum()) if len(frames) else 0
        ps = _pose_samples(gt, pred, rows, frames, np.full(len(rows), p, np.int64))
        people.append(
            {
                "video_id": gt.video_id,
                "person_id": pid,
                "counted_frames": n_counted,
                "matched_frames": int(((vm.pair_gt == p) & vm.pair_counted).sum()),
                "best_track": best,
                "best_track_frames": len(rows),
                "coverage": covered / n_counted if n_counted else float("nan"),
                "missed": pid in vm.missed_people,
                "track_ids": vm.person_tracks[pid],
                "duplicate_frames": vm.person_duplicates[pid],
                **{k: _mean(ps[k]) for k in POSE_METRICS},
            }
        )
    return VideoEval(row=row, samples=samples, people=people, identity=vm.identity, accumulator=vm.accumulator)


# ------------------------------------------------------------------------ report
def _clean(x: Any) -> Any:
    """JSON-safe value: NaN -> None, numpy scalars -> Python."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _fmt(col: str, x: Any) -> str:
    if x is None or (isinstance(x, (float, np.floating)) and math.isnan(float(x))):
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{x:.3f}" if col in RATIO_COLUMNS else f"{x:.1f}"
    return str(x)


def markdown_table(df: pd.DataFrame, index_name: str = "") -> str:
    """A GitHub markdown table of ``df`` (index first), numbers formatted per column."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([index_name] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    # records keep each column's dtype (iterrows would turn a mixed row into floats)
    for idx, r in zip(df.index, df.to_dict(orient="records")):
        lines.append("| " + " | ".join([str(idx)] + [_fmt(c, r[c]) for c in cols]) + " |")
    return "\n".join(lines)


@dataclass
class EvalReport:
    """Scores of a prediction folder.

    per_video: DataFrame indexed by video_id (columns described in the module doc).
    overall: the overall row (same keys), frame-weighted.
    people: DataFrame, one row per (video, ground-truth person): the track that covers
        it most, its coverage of the person's counted frames and pose errors of that track,
        track_ids (distinct track ids matched while counted) and duplicate_frames.
    settings: the evaluation parameters.
    """

    per_video: pd.DataFrame
    overall: dict[str, Any]
    people: pd.DataFrame
    settings: dict[str, Any]

    def table(self) -> pd.DataFrame:
        """per_video with the overall row appended (index "overall")."""
        over = pd.DataFrame([self.overall], index=pd.Index([OVERALL], name="video_id"))
        return pd.concat([self.per_video, over[self.per_video.columns]]) if len(self.per_video) else over

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (NaN -> None) with keys settings, overall, videos, people."""
        return {
            "settings": self.settings,
            "overall": {k: _clean(v) for k, v in self.overall.items()},
            "videos": [
                {k: _clean(v) for k, v in r.items()} for r in self.per_video.reset_index().to_dict(orient="records")
            ],
            "people": [{k: _clean(v) for k, v in r.items()} for r in self.people.to_dict(orient="records")],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (NaN written as null)."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self, columns: tuple[str, ...] | list[str] | None = SUMMARY_COLUMNS) -> str:
        """Markdown table of the per-video rows and the overall row (``columns=None``: all)."""
        t = self.table()
        if columns is not None:
            t = t[[c for c in columns if c in t.columns]]
        return markdown_table(t, "video_id")


def _overall(videos: list[VideoEval], mot: pd.DataFrame) -> dict[str, Any]:
    rows = pd.DataFrame([v.row for v in videos])
    out: dict[str, Any] = {}
    for c in (
        "frames",
        "gt_people",
        "tracks",
        "pred_rows",
        "gt_instances",
        "tp",
        "fp",
        "fn",
        "ignored",
        "missed_people",
        "false_tracks",
        "pairs",
        "pairs_filled",
    ):
        out[c] = int(rows[c].sum())
    out["precision"], out["recall"], out["f1"] = M.precision_recall_f1(out["tp"], out["fp"], out["fn"])
    out.update(sum((v.identity for v in videos), IdentityCounts()).row())
    for c, src in (
        ("idf1", "idf1"),
        ("mota", "mota"),
        ("id_switches", "num_switches"),
        ("mot_misses", "num_misses"),
        ("mot_false_positives", "num_false_positives"),
    ):
        v = mot.loc["OVERALL", src]
        out[c] = float(v) if c in ("idf1", "mota") else int(v)
    cat = {k: np.concatenate([v.samples[k] for v in videos]) for k in videos[0].samples}
    out.update(_split(cat))
    out["jitter_m_s3"] = _mean(cat["jitter_m_s3"])
    out["gt_jitter_m_s3"] = _mean(cat["gt_jitter_m_s3"])
    out.update(_world_row(cat))
    return out


def _world_row(samples: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of the world metrics (segments, contacts, walking people) and the camera errors
    (mean and median over videos)."""
    out = {k: _mean(samples[k]) for k in W.WORLD_METRICS + ("speed_err_pct",)}
    for k in ("fov_err_deg", "gravity_err_deg"):
        v = samples[k][np.isfinite(samples[k])]
        out[k] = _mean(v)
        out[k + "_median"] = float(np.median(v)) if len(v) else float("nan")
    return out


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    body_model: Any = None,
    visibility: float = 0.3,
    iou_threshold: float = 0.5,
) -> EvalReport:
    """Score ``PRED_DIR/<video_id>/tracks.parquet`` against ``GT_DIR/<video_id>/gt.npz``.

    body_model: None = hmrflow's synthetic body model; a path = real SMPL files; or a
        body model object / :class:`~hmrflow.jobs.evaluate.loading.MeshFn` callable.
        The same model poses predictions and ground truth.
    visibility: people with ``visible_frac`` below this are don't-care in a frame.
    iou_threshold: minimal projected-box IoU of a match.
    A ground-truth video without predictions counts as all missed (with a warning);
    prediction folders without ground truth are ignored (with a warning).
    """
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise EvalInputError(f"{pred_root}: prediction folder not found")
    gt_videos = find_gt_videos(gt_dir)
    if not 0.0 <= visibility <= 1.0:
        raise EvalInputError(f"visibility must be in [0, 1], got {visibility}")
    mesh_fn: MeshFn = resolve_body_model(body_model)
    gt_names = {p.name for p in gt_videos}
    extra = sorted(p.parent.name for p in pred_root.glob(f"*/{TRACKS_FILE}") if p.parent.name not in gt_names)
    if extra:
        log.warning("%s: no ground truth for predicted videos %s; ignored", pred_root, extra)
    results: list[VideoEval] = []
    for vdir in gt_videos:
        gt = load_ground_truth(vdir, mesh_fn)
        pdir = pred_root / vdir.name if vdir != Path(gt_dir) else pred_root / gt.video_id
        if (pdir / TRACKS_FILE).is_file():
            pred = load_predictions(pdir, gt, mesh_fn)
        else:
            log.warning("%s: no %s for video %r: every person counts as missed", pdir, TRACKS_FILE, gt.video_id)
            pred = Predictions.empty(gt.video_id)
        res = evaluate_video(
            gt, pred, visibility=visibility, iou_threshold=iou_threshold, camera=W.manifest_camera(pdir)
        )
        results.append(res)
        log.info("%s: recall %.3f, MPJPE %.1f mm", gt.video_id, res.row["recall"], res.row["mpjpe_mm"])
    mot = tracking_metrics({r.row["video_id"]: r.accumulator for r in results})
    for r in results:
        m = mot.loc[r.row["video_id"]]
        r.row.update(
            idf1=float(m["idf1"]),
            mota=float(m["mota"]),
            id_switches=int(m["num_switches"]),
            mot_misses=int(m["num_misses"]),
            mot_false_positives=int(m["num_false_positives"]),
        )
    per_video = pd.DataFrame([r.row for r in results]).set_index("video_id")
    people = pd.DataFrame([p for r in results for p in r.people])
    settings = {
        "pred_dir": str(pred_root),
        "gt_dir": str(gt_dir),
        "visibility": visibility,
        "iou_threshold": iou_threshold,
        "body_model": "synthetic"
        if body_model is None
        else str(body_model)
        if isinstance(body_model, (str, Path))
        else type(body_model).__name__,
        "protocol": "boxes = projected meshes with GT K; MPJPE/PVE/accel pelvis-aligned; PA = similarity Procrustes; "
        "jitter = mean |third difference| * fps^3, camera frame",
    }
    return EvalReport(per_video=per_video, overall=_overall(results, mot), people=people, settings=settings)
