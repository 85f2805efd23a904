"""Frame-by-frame matching of predicted people to ground truth, and tracking metrics.

Matching rule (one frame):
  the cost is box IoU between the **image-clipped boxes of the projected meshes**
  (predicted mesh projected with the ground-truth intrinsics K, ground-truth mesh the
  same way).  ``tracks.parquet`` carries no box, and gt.npz's ``boxes`` hold only the
  *visible* pixels, which shrink under occlusion while a predicted mesh does not, so
  both sides use the full projected body.  A pair may match only if IoU >= the gate
  (0.5 by default).

  1. Hungarian assignment (``scipy.optimize.linear_sum_assignment``, maximising IoU)
     of predictions to the *counted* ground-truth people (``visible_frac >=
     visibility``): matches are true positives.
  2. The predictions left over are assigned the same way to the *don't-care* people
     (too occluded, or out of the image): those matches are neither true nor false
     positives and are left out of detection and tracking counts.
  3. Anything else is a false positive; counted people left unmatched are misses.

Tracking metrics come from ``motmetrics`` (one ``MOTAccumulator`` per video, fed the
counted people and the non-ignored predictions with distance ``1 - IoU``, NaN beyond
the gate; its own metrics host computes IDF1, MOTA, ID switches...).  Note that
motmetrics applies the CLEAR-MOT rule (keep last frame's match while it stays inside
the gate), so in rare crowded frames its pairs can differ from step 1's.  An ID
switch is counted per ground-truth person whose matched track id changes, so two
people swapping tracks count two switches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hmrflow.pipeline.boxes import box_iou, match_iou

log = logging.getLogger(__name__)

#: motmetrics metric names reported per video (and overall)
TRACKING_METRICS: tuple[str, ...] = (
    "idf1",
    "idp",
    "idr",
    "mota",
    "motp",
    "num_switches",
    "num_misses",
    "num_false_positives",
    "num_objects",
    "num_predictions",
    "num_matches",
    "num_unique_objects",
    "mostly_tracked",
    "mostly_lost",
    "num_fragmentations",
)


@dataclass(frozen=True)
class FrameAssignment:
    """Result of matching one frame.

    pred_to_gt: (n,) int64, the ground-truth column each prediction matched, -1 if none.
    ignored: (n,) bool, True where the match is to a don't-care person.
    iou: (n,) float64 IoU of each prediction's match (0 where unmatched).
    """

    pred_to_gt: np.ndarray
    ignored: np.ndarray
    iou: np.ndarray


def assign_frame(iou: np.ndarray, counted: np.ndarray, gate: float = 0.5) -> FrameAssignment:
    """Match one frame's predictions to its ground-truth people (two-stage rule above).

    iou: (n_pred, n_gt) IoU matrix; counted: (n_gt,) bool (False = don't care).
    """
    iou = np.asarray(iou, dtype=np.float64)
    counted = np.asarray(counted, dtype=bool)
    n, m = iou.shape
    pred_to_gt = np.full(n, -1, np.int64)
    ignored = np.zeros(n, bool)
    best = np.zeros(n)
    cnt_cols = np.nonzero(counted)[0]
    dc_cols = np.nonzero(~counted)[0]
    for r, c in match_iou(iou[:, cnt_cols], gate):
        pred_to_gt[r] = cnt_cols[c]
        best[r] = iou[r, cnt_cols[c]]
    free = np.nonzero(pred_to_gt < 0)[0]
    for r, c in match_iou(iou[np.ix_(free, dc_cols)], gate):
        pred_to_gt[free[r]] = dc_cols[c]
        ignored[free[r]] = True
        best[free[r]] = iou[free[r], dc_cols[c]]
    return FrameAssignment(pred_to_gt=pred_to_gt, ignored=ignored, iou=best)


@dataclass
class VideoMatching:
    """Matches of one video.

    pair_pred: (K,) row index into the prediction table of each matched pair.
    pair_frame, pair_gt: (K,) frame index and ground-truth person column of each pair.
    pair_counted: (K,) bool, False for matches to don't-care people.
    tp, fp, fn, ignored: detection counts over all frames (ignored = predictions
        matched to don't-care people).
    missed_people: ids of people counted in some frame but never matched while counted.
    false_tracks: track ids none of whose rows matched anybody (counted or not).
    best_track: person id -> (track id covering it in the most frames, that number of
        frames); -1 when never matched.
    accumulator: the video's ``motmetrics.MOTAccumulator``.
    """

    pair_pred: np.ndarray
    pair_frame: np.ndarray
    pair_gt: np.ndarray
    pair_counted: np.ndarray
    tp: int
    fp: int
    fn: int
    ignored: int
    missed_people: list[int]
    false_tracks: list[int]
    best_track: dict[int, tuple[int, int]]
    counted_frames: dict[int, int]
    accumulator: object = field(repr=False)


def match_video(
    pred_frame: np.ndarray,
    pred_track: np.ndarray,
    pred_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_counted: np.ndarray,
    person_id: np.ndarray,
    gate: float = 0.5,
) -> VideoMatching:
    """Match every frame of one video and feed a motmetrics accumulator.

    pred_frame: (N,) int64 frame index of each prediction row (in [0, F)).
    pred_track: (N,) int64 track id of each row (unique within a frame).
    pred_boxes: (N, 4) xyxy pixels (NaN = not in the image).
    gt_boxes: (F, P, 4) xyxy pixels of each ground-truth person (NaN = none).
    gt_counted: (F, P) bool, True where the person counts (visible enough).
    person_id: (P,) int64 ground-truth identities.
    gate: minimal IoU of a match.
    """
    import motmetrics as mm

    pred_frame = np.asarray(pred_frame, np.int64)
    pred_track = np.asarray(pred_track, np.int64)
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    gt_counted = np.asarray(gt_counted, bool)
    person_id = np.asarray(person_id, np.int64)
    n_frames, n_people = gt_counted.shape
    acc = mm.MOTAccumulator(auto_id=False)
    order = np.argsort(pred_frame, kind="stable")
    bounds = np.searchsorted(pred_frame[order], np.arange(n_frames + 1))
    pairs: list[tuple[int, int, int, bool]] = []
    tp = fp = fn = ign = 0
    matched_rows = np.zeros(len(pred_frame), bool)
    for f in range(n_frames):
        rows = order[bounds[f] : bounds[f + 1]]
        iou = box_iou(pred_boxes[rows], gt_boxes[f])
        fa = assign_frame(iou, gt_counted[f], gate)
        for k, r in enumerate(rows):
            if fa.pred_to_gt[k] >= 0:
                pairs.append((int(r), f, int(fa.pred_to_gt[k]), not bool(fa.ignored[k])))
                matched_rows[r] = True
        n_tp = int(((fa.pred_to_gt >= 0) & ~fa.ignored).sum())
        tp += n_tp
        ign += int(fa.ignored.sum())
        fp += int((fa.pred_to_gt < 0).sum())
        fn += int(gt_counted[f].sum()) - n_tp
        # tracking: counted people vs predictions not matched to don't-care people
        keep = ~fa.ignored
        cols = np.nonzero(gt_counted[f])[0]
        dist = 1.0 - iou[np.ix_(keep, cols)].T  # (n_gt, n_hyp)
        dist[dist > 1.0 - gate] = np.nan
        acc.update(person_id[cols].tolist(), pred_track[rows[keep]].tolist(), dist, frameid=f)

    if pairs:
        pr, pf, pg, pc = (np.array(x) for x in zip(*pairs))
    else:
        pr = pf = pg = np.zeros(0, np.int64)
        pc = np.zeros(0, bool)
    # people and tracks that never matched
    counted_frames = {int(person_id[p]): int(gt_counted[:, p].sum()) for p in range(n_people)}
    matched_counted = set(pg[pc].tolist())
    missed = [
        int(person_id[p]) for p in range(n_people) if counted_frames[int(person_id[p])] and p not in matched_counted
    ]
    tracks = np.unique(pred_track)
    hit_tracks = set(pred_track[matched_rows].tolist())
    false_tracks = [int(t) for t in tracks if int(t) not in hit_tracks]
    best: dict[int, tuple[int, int]] = {}
    for p in range(n_people):
        sel = pg == p
        if not sel.any():
            best[int(person_id[p])] = (-1, 0)
            continue
        ids, counts = np.unique(pred_track[pr[sel]], return_counts=True)
        k = int(np.argmax(counts))
        best[int(person_id[p])] = (int(ids[k]), int(counts[k]))
    return VideoMatching(
        pair_pred=pr.astype(np.int64),
        pair_frame=pf.astype(np.int64),
        pair_gt=pg.astype(np.int64),
        pair_counted=pc.astype(bool),
        tp=tp,
        fp=fp,
        fn=fn,
        ignored=ign,
        missed_people=missed,
        false_tracks=false_tracks,
        best_track=best,
        counted_frames=counted_frames,
        accumulator=acc,
    )


def tracking_metrics(accumulators: dict[str, object]):
    """motmetrics summary (pandas DataFrame): one row per video plus an "OVERALL" row.

    accumulators: video id -> ``MOTAccumulator``.  Columns: :data:`TRACKING_METRICS`.
    """
    import motmetrics as mm

    host = mm.metrics.create()
    names = list(accumulators)
    # motmetrics logs its timings at INFO on the root logger; keep them out of user output
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        return host.compute_many(
            [accumulators[n] for n in names], metrics=list(TRACKING_METRICS), names=names, generate_overall=True
        )
    finally:
        logging.disable(previous)
