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

Identity measures (:class:`IdentityCounts`, all from step 1's pairs, counted people only):

* fragments: for each person matched at least once while counted, the number of
  distinct track ids matched to them (ideal 1);
* duplicates: a matched, counted person-frame where another prediction's box has IoU >=
  :data:`DUPLICATE_IOU` with the person's box while that prediction is matched to
  nobody (neither counted nor don't-care) and overlaps nobody else (IoU below
  :data:`OTHER_PERSON_IOU` with every other person of the frame): two tracks on one person.
  A box that also covers someone else is that person's track, however imprecise (an
  occluded person's gap-filled box lying over the one in front);
* overlap recall: recall over counted person-frames whose box has IoU >=
  :data:`OVERLAP_IOU` with another counted person's box in the same frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

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


#: IoU with a matched person's box above which an unmatched prediction is a duplicate track
DUPLICATE_IOU = 0.5
#: ...unless its IoU with another person of the frame reaches this (then it is that person's track)
OTHER_PERSON_IOU = 0.3
#: IoU between two counted people's boxes above which both count as overlapping
OVERLAP_IOU = 0.3


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


def duplicated_people(
    iou: np.ndarray, pred_to_gt: np.ndarray, counted: np.ndarray, threshold: float = DUPLICATE_IOU
) -> np.ndarray:
    """Which ground-truth people of one frame carry a second, unmatched track.

    Args:
        iou: (n_pred, n_gt) box IoU of the frame's predictions and people.
        pred_to_gt: (n_pred,) int64 column each prediction is matched to, -1 if none
            (matches to don't-care people count as matched).
        counted: (n_gt,) bool, people that count.
        threshold: minimal IoU of the unmatched prediction with the person's box.
    Returns:
        (n_gt,) bool: counted, matched and overlapped (IoU >= threshold) by a prediction
        matched to nobody.
    """
    iou = np.asarray(iou, np.float64).reshape(len(pred_to_gt), len(counted))
    pred_to_gt = np.asarray(pred_to_gt, np.int64)
    matched = np.zeros(len(counted), bool)
    matched[pred_to_gt[pred_to_gt >= 0]] = True
    free = pred_to_gt < 0
    if not free.any():
        return np.zeros(len(counted), bool)
    # the matched prediction itself is never "free", so any hit here is another track; a free box
    # that also covers someone else (IoU >= OTHER_PERSON_IOU) is that person's track
    f = iou[free]  # (n_free, n_gt)
    n_gt = f.shape[1]
    others = np.array([np.delete(f, p, axis=1).max(1) if n_gt > 1 else np.zeros(len(f)) for p in range(n_gt)]).T
    hits = (f >= threshold) & (others < OTHER_PERSON_IOU)
    return matched & np.asarray(counted, bool) & hits.any(0)


def overlapping_people(boxes: np.ndarray, counted: np.ndarray, threshold: float = OVERLAP_IOU) -> np.ndarray:
    """(n_gt,) bool: counted people whose box has IoU >= threshold with another counted person's.

    boxes: (n_gt, 4) xyxy pixels of one frame (NaN = none); counted: (n_gt,) bool.
    """
    counted = np.asarray(counted, bool)
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    iou[:, ~counted] = 0.0  # overlapping a don't-care person does not make one an instance
    return counted & (iou >= threshold).any(1)


@dataclass
class IdentityCounts:
    """Sums behind the identity measures (one video, or several added together).

    matched_people: people matched at least once while counted.
    person_track_ids: sum over those people of their distinct matched track ids.
    fragmented_people: those people with more than one track id.
    matched_frames: matched counted person-frames (true positives).
    duplicate_frames: of those, person-frames carrying a second, unmatched track
        (:func:`duplicated_people`).
    overlap_instances: counted person-frames overlapping another counted person
        (:func:`overlapping_people`); overlap_matched: how many of them were matched.
    """

    matched_people: int = 0
    person_track_ids: int = 0
    fragmented_people: int = 0
    matched_frames: int = 0
    duplicate_frames: int = 0
    overlap_instances: int = 0
    overlap_matched: int = 0

    def __add__(self, other: "IdentityCounts") -> "IdentityCounts":
        return IdentityCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def fragments_per_person(self) -> float:
        """Mean distinct track ids per matched person (ideal 1.0; NaN when nobody matched)."""
        return self.person_track_ids / self.matched_people if self.matched_people else float("nan")

    @property
    def duplicate_frac(self) -> float:
        """duplicate_frames / matched_frames (NaN when nothing matched)."""
        return self.duplicate_frames / self.matched_frames if self.matched_frames else float("nan")

    @property
    def recall_overlap(self) -> float:
        """overlap_matched / overlap_instances (NaN when nobody overlaps)."""
        return self.overlap_matched / self.overlap_instances if self.overlap_instances else float("nan")

    def row(self) -> dict[str, float | int]:
        """The report columns: fragments_per_person, fragmented_people, duplicate_frames,
        duplicate_frac, recall_overlap, overlap_instances (and the sums behind them)."""
        return {
            "fragments_per_person": self.fragments_per_person,
            "fragmented_people": self.fragmented_people,
            "duplicate_frames": self.duplicate_frames,
            "duplicate_frac": self.duplicate_frac,
            "recall_overlap": self.recall_overlap,
            "overlap_instances": self.overlap_instances,
            "overlap_matched": self.overlap_matched,
            "matched_people": self.matched_people,
            "person_track_ids": self.person_track_ids,
        }


def track_ids_per_person(person: np.ndarray, track: np.ndarray) -> dict[int, int]:
    """Distinct track ids matched to each person.

    person: (K,) person of each matched (counted) pair; track: (K,) its track id.
    Returns person -> number of distinct track ids (people without pairs are absent).
    """
    person = np.asarray(person, np.int64)
    track = np.asarray(track, np.int64)
    if not len(person):
        return {}
    uniq = np.unique(np.stack([person, track], 1), axis=0)
    ids, counts = np.unique(uniq[:, 0], return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


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
    counted_frames: person id -> frames in which the person counts.
    identity: fragments / duplicates / overlap-recall sums (:class:`IdentityCounts`).
    person_tracks: person id -> distinct track ids matched while counted (0 = never).
    person_duplicates: person id -> duplicated person-frames (:func:`duplicated_people`).
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
    identity: IdentityCounts
    person_tracks: dict[int, int]
    person_duplicates: dict[int, int]
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
    dup_per_person = np.zeros(n_people, np.int64)
    overlap_n = overlap_hit = 0
    for f in range(n_frames):
        rows = order[bounds[f] : bounds[f + 1]]
        iou = box_iou(pred_boxes[rows], gt_boxes[f])
        fa = assign_frame(iou, gt_counted[f], gate)
        dup_per_person += duplicated_people(iou, fa.pred_to_gt, gt_counted[f])
        overlap = overlapping_people(gt_boxes[f], gt_counted[f])
        hit = np.zeros(n_people, bool)
        hit[fa.pred_to_gt[(fa.pred_to_gt >= 0) & ~fa.ignored]] = True
        overlap_n += int(overlap.sum())
        overlap_hit += int((overlap & hit).sum())
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
    n_ids = track_ids_per_person(pg[pc], pred_track[pr[pc]])
    person_tracks = {int(person_id[p]): n_ids.get(p, 0) for p in range(n_people)}
    identity = IdentityCounts(
        matched_people=len(n_ids),
        person_track_ids=sum(n_ids.values()),
        fragmented_people=sum(v > 1 for v in n_ids.values()),
        matched_frames=tp,
        duplicate_frames=int(dup_per_person.sum()),
        overlap_instances=overlap_n,
        overlap_matched=overlap_hit,
    )
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
        identity=identity,
        person_tracks=person_tracks,
        person_duplicates={int(person_id[p]): int(dup_per_person[p]) for p in range(n_people)},
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
