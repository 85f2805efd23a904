"""Online multi-person tracking of per-frame SMPL estimates, one video at a time.

Frames are visited once, in ``(frame_idx, content)`` order, so the work is linear in
the number of frames (each frame costs ``live tracks x detections``, and tracks end
``reid_window_s`` after they were last seen).  Every quantity that involves time uses
the ``pts`` column (seconds): the Kalman filters predict by the real ``dt``, lost
tracks are kept for a duration, short tracks are dropped by duration.

Per frame, a matching cascade (each step a gated :func:`linear_sum_assignment`):

1. confirmed tracks seen within ``lost_after_s``: cost = motion-predicted box IoU
   + root (``cam_t``) and box Mahalanobis distances (+ the log-determinant part of the
   root likelihood, so a stale track's wide prediction does not beat a fresh one)
   + betas distance + joint-angle distance; a pair is allowed only when the root *or*
   the box passes its chi-square gate and the betas are not far apart;
2. lost confirmed tracks (unseen for ``lost_after_s`` .. ``reid_window_s``) with the
   remaining detections: re-identification by betas (running mean, gated by the
   track's own spread) and root position, whose predicted uncertainty grows with the
   time since the track was last seen;
3. tentative tracks with the remaining detections (same cost as 1);
4. every detection still unmatched starts a tentative track (unless it duplicates a
   matched detection of the same frame).

Tentative tracks become confirmed after ``confirm_hits`` hits and are discarded when
unseen for ``tentative_max_miss_s``; so a false single-frame detection never makes a
track.  At the end confirmed tracks spanning less than ``min_track_s`` are dropped and
the rest are numbered ``0..K-1`` by first appearance.  Rows of no kept track are
removed from the output.

The stage holds no state between calls: the result is a pure function of the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from hmrflow.pipeline.boxes import box_iou
from hmrflow.pipeline.config import TrackConfig
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import MeshEstimates, TrackedEstimates
from hmrflow.stages.track.appearance import appearance_distance, appearance_evidence
from hmrflow.stages.track.cost import (
    gated_assignment,
    mahalanobis_sq,
    pose_distance,
    reachable,
    shape_distance_sq,
)
from hmrflow.stages.track.kalman import (
    KalmanState,
    box_measurement_noise,
    box_measurement_noise_batch,
    box_to_cxcywh,
    cxcywh_to_box,
    kf_init,
    kf_predict_batch,
    kf_update_batch,
    root_measurement_noise,
    root_measurement_noise_batch,
)
from hmrflow.stages.track.stitch import duplicate_rows, merge_colocated, split_on_change, stitch, summarize

log = logging.getLogger(__name__)

#: Initial velocity uncertainty of a new track: root in m/s, box in box heights per s.
ROOT_VEL_STD = 2.0
BOX_VEL_STD = 1.5
#: A new detection duplicates a matched one when their boxes overlap this much and
#: their roots are this close (the estimator ran twice on one person).
DUPLICATE_IOU = 0.7
DUPLICATE_DIST_M = 0.3
#: Cap of the log-determinant cost term of recently seen tracks.
GROWTH_CAP = 4.0
#: Shape spread model: prior pseudo-hits, and floor as a fraction of ``shape_noise``.
SHAPE_PRIOR_HITS = 5.0
SHAPE_MIN_REL = 0.2
#: Predicted boxes of two tracks overlapping more than this (IoU) are in contact.
CONTACT_IOU = 0.1
#: Weight of a new clean view in a track's running appearance mean (a slow forgetting).
APP_RATE = 0.1
#: A view is clean when no other detection of its frame overlaps its box more than this (IoU);
#: a view shared with another person counts ``SHARED_VIEW`` of a clean one (masks of
#: overlapping people are disjoint, so such views stay informative; a little less so).
CLEAN_IOU = 0.1
SHARED_VIEW = 0.7
#: A view whose box touches the image border (the person may be cut off) counts this much.
BORDER_VIEW = 0.3


def _clean_views(est: MeshEstimates) -> np.ndarray:
    """(N,) how much each row's view is worth: 1 for rows whose box no other row of the same frame
    overlaps (IoU > ``CLEAN_IOU``), ``SHARED_VIEW`` for the others, times ``BORDER_VIEW`` for boxes at
    the image border, 0 for rows with no appearance (all-zero descriptor)."""
    n = len(est)
    out = np.ones(n)
    order = np.argsort(est.frame_idx, kind="stable")
    f = est.frame_idx[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], n]):
        rows = order[s:e]
        if rows.size > 1:
            iou = box_iou(est.boxes_xyxy[rows], est.boxes_xyxy[rows])
            np.fill_diagonal(iou, 0.0)
            out[rows[iou.max(1) > CLEAN_IOU]] = SHARED_VIEW
    out[est.at_border] *= BORDER_VIEW
    out[~np.any(est.appearance != 0, axis=1)] = 0.0
    return out


@dataclass
class _Track:
    """Mutable per-call bookkeeping of one track (never outlives one ``track_video`` call)."""

    birth: int
    root: KalmanState
    box: KalmanState
    t_state: float
    first_t: float
    last_hit_t: float
    hits: int
    confirmed: bool
    betas_sum: np.ndarray
    betas_sq_sum: np.ndarray
    weight_sum: float
    rotmats: np.ndarray
    app_sum: np.ndarray
    app_weight: float
    last_root: np.ndarray
    rows: list[int] = field(default_factory=list)
    n_reid: int = 0
    #: positions in ``rows`` where a new tracklet starts (after a gap in contact with another track)
    splits: list[int] = field(default_factory=list)

    @property
    def app_mean(self) -> np.ndarray:
        """(D,) weighted mean appearance descriptor (zeros: nothing clean seen yet)."""
        return self.app_sum / self.app_weight if self.app_weight > 0 else self.app_sum

    @property
    def betas_mean(self) -> np.ndarray:
        """(B,) confidence-weighted running mean of the track's betas."""
        return self.betas_sum / self.weight_sum

    def betas_std(self, prior_std: float) -> np.ndarray:
        """(B,) expected std of a new estimate's betas around :attr:`betas_mean`.

        The track's own spread, shrunk towards ``prior_std`` with ``SHAPE_PRIOR_HITS``
        pseudo-observations, inflated by the uncertainty of the mean.
        """
        emp = np.clip(self.betas_sq_sum / self.weight_sum - self.betas_mean**2, 0.0, None)
        n = self.hits
        var = (SHAPE_PRIOR_HITS * prior_std**2 + n * emp) / (SHAPE_PRIOR_HITS + n)
        var = np.maximum(var, (SHAPE_MIN_REL * prior_std) ** 2)
        return np.sqrt(var * (1.0 + 1.0 / n))


@dataclass(frozen=True)
class TrackStats:
    """Counters of one ``track_video`` call (used to check the work is linear).

    pair_evaluations: sum over frames and cascade steps of ``tracks x detections``.
    max_live_tracks: largest number of tracks alive at one frame.
    n_tracklets: confirmed tracklets of the online pass; n_joins: tracklet joins made by
    stitching; stitch_pairs: candidate pairs it costed; n_duplicate_rows: rows dropped as a
    second track on one person.
    """

    n_frames: int
    n_rows: int
    pair_evaluations: int
    max_live_tracks: int
    n_tracks_started: int
    n_tracks_kept: int
    n_reidentified: int
    n_tracklets: int = 0
    n_joins: int = 0
    stitch_pairs: int = 0
    n_duplicate_rows: int = 0


class _Tracker:
    """One pass over one video's rows; see the module docstring."""

    def __init__(self, cfg: TrackConfig, est: MeshEstimates) -> None:
        self.cfg = cfg
        self.est = est
        self.gate_root = float(cfg.gate_chi2)
        self.gate_box = float(chi2.ppf(chi2.cdf(cfg.gate_chi2, 3), 4))
        self.live: list[_Track] = []
        self.done: list[_Track] = []
        self.n_born = 0
        self.n_reid = 0
        self.pts_now = 0.0
        self.pairs = 0
        self.max_live = 0
        self.boxes = box_to_cxcywh(est.boxes_xyxy)  # (N, 4)
        self.cam_t = est.cam_t.astype(np.float64)
        self.betas = est.betas.astype(np.float64)
        self.weights = np.clip(np.nan_to_num(est.confidence.astype(np.float64)), 0.05, 1.0)
        self.app = np.nan_to_num(est.appearance.astype(np.float64))
        self.clean = _clean_views(est)

    # ---------------------------------------------------------------- track ops
    def _root_R(self, cam_t: np.ndarray) -> np.ndarray:
        return root_measurement_noise(cam_t, self.cfg.pos_noise_m, self.cfg.depth_noise_rel)

    def _box_R(self, h: float) -> np.ndarray:
        return box_measurement_noise(h, self.cfg.box_noise_rel)

    def _birth(self, row: int, t: float) -> None:
        c = self.boxes[row]
        tr = _Track(
            birth=self.n_born,
            root=kf_init(self.cam_t[row], self._root_R(self.cam_t[row]), ROOT_VEL_STD),
            box=kf_init(c, self._box_R(c[3]), BOX_VEL_STD * c[3]),
            t_state=t,
            first_t=t,
            last_hit_t=t,
            hits=1,
            confirmed=self.cfg.confirm_hits <= 1,
            betas_sum=self.betas[row] * self.weights[row],
            betas_sq_sum=self.betas[row] ** 2 * self.weights[row],
            weight_sum=float(self.weights[row]),
            rotmats=self.est.rotmats[row],
            app_sum=self.app[row] * self.clean[row],
            app_weight=float(self.clean[row]),
            last_root=self.cam_t[row],
            rows=[row],
        )
        self.n_born += 1
        self.live.append(tr)

    def _predict_all(self, t: float) -> None:
        """Propagate every live track's filters to time ``t`` (all tracks in one batch)."""
        moving = [tr for tr in self.live if t - tr.t_state > 0]
        if not moving:
            return
        dt = np.array([t - tr.t_state for tr in moving])
        rx, rP = kf_predict_batch(
            np.stack([tr.root.x for tr in moving]),
            np.stack([tr.root.P for tr in moving]),
            dt,
            np.full(len(moving), self.cfg.accel_std),
        )
        h = np.maximum(np.array([tr.box.x[3] for tr in moving]), 1.0)
        bx, bP = kf_predict_batch(
            np.stack([tr.box.x for tr in moving]),
            np.stack([tr.box.P for tr in moving]),
            dt,
            self.cfg.box_accel_rel * h,
        )
        for i, tr in enumerate(moving):
            tr.root, tr.box, tr.t_state = KalmanState(rx[i], rP[i]), KalmanState(bx[i], bP[i]), t

    def _hit_all(self, pairs: list[tuple[_Track, int]], t: float) -> None:
        """Update the matched tracks' filters with their rows (all pairs in one batch), then
        their shape, pose and appearance summaries."""
        if not pairs:
            return
        cfg = self.cfg
        rows = np.array([row for _, row in pairs])
        z = self.cam_t[rows]
        rx, rP = kf_update_batch(
            np.stack([tr.root.x for tr, _ in pairs]),
            np.stack([tr.root.P for tr, _ in pairs]),
            z,
            root_measurement_noise_batch(z, cfg.pos_noise_m, cfg.depth_noise_rel),
        )
        c = self.boxes[rows]
        bx, bP = kf_update_batch(
            np.stack([tr.box.x for tr, _ in pairs]),
            np.stack([tr.box.P for tr, _ in pairs]),
            c,
            box_measurement_noise_batch(c[:, 3], cfg.box_noise_rel),
        )
        for i, (tr, row) in enumerate(pairs):
            tr.root = KalmanState(rx[i], rP[i])
            if t - tr.last_hit_t > cfg.lost_after_s:
                # re-identified after a long gap: the box filter's velocity is meaningless now
                tr.box = kf_init(c[i], self._box_R(c[i, 3]), BOX_VEL_STD * c[i, 3])
                tr.n_reid += 1
                self.n_reid += 1
            else:
                tr.box = KalmanState(bx[i], bP[i])
            self._hit_summaries(tr, int(row), t)

    def _hit_summaries(self, tr: _Track, row: int, t: float) -> None:
        tr.last_hit_t = t
        tr.last_root = self.cam_t[row]
        tr.hits += 1
        tr.confirmed = tr.confirmed or tr.hits >= self.cfg.confirm_hits
        w = float(self.weights[row])
        tr.betas_sum = tr.betas_sum + w * self.betas[row]
        tr.betas_sq_sum = tr.betas_sq_sum + w * self.betas[row] ** 2
        tr.weight_sum += w
        tr.rotmats = self.est.rotmats[row]
        # a running mean that forgets slowly; views shared with other people count little
        w = APP_RATE * float(self.clean[row])
        tr.app_sum = (
            (1.0 - w) * tr.app_sum + w * self.app[row] if tr.app_weight > 0 else self.app[row] * self.clean[row]
        )
        tr.app_weight = (1.0 - w) * tr.app_weight + w if tr.app_weight > 0 else float(self.clean[row])
        tr.rows.append(row)

    # ---------------------------------------------------------------- costs
    def _root_terms(self, tracks: list[_Track], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Root Mahalanobis distances (T, D) and the uncertainty growth (T,).

        The second term is ``0.5 * log(det S / det R)``: the part of the Gaussian negative
        log-likelihood that makes a confident (recently seen) track cheaper than a stale
        one whose wide prediction would otherwise accept anything nearby.
        """
        x = np.stack([tr.root.x for tr in tracks])
        R = root_measurement_noise_batch(x[:, :3], self.cfg.pos_noise_m, self.cfg.depth_noise_rel)
        S = np.stack([tr.root.P[:3, :3] for tr in tracks]) + R
        growth = 0.5 * (np.linalg.slogdet(S)[1] - np.linalg.slogdet(R)[1])
        return mahalanobis_sq(x[:, :3], S, self.cam_t[rows]), growth

    def _shape_terms(self, tracks: list[_Track], rows: np.ndarray) -> np.ndarray:
        means = np.stack([tr.betas_mean for tr in tracks])
        stds = np.stack([tr.betas_std(self.cfg.shape_noise) for tr in tracks])
        return shape_distance_sq(means, self.betas[rows], stds)

    def _app_terms(self, tracks: list[_Track], rows: np.ndarray) -> np.ndarray:
        """Appearance distances (T, D) in [0, 1]; NaN where a side has no usable appearance."""
        return appearance_distance(np.stack([tr.app_mean for tr in tracks]), self.app[rows])

    def _motion_cost(self, tracks: list[_Track], rows: np.ndarray, t: float) -> np.ndarray:
        """Cost of steps 1 and 3 (recently seen tracks): (T, D), ``inf`` where gated out."""
        cfg = self.cfg
        d2_root, growth = self._root_terms(tracks, rows)
        box_means_a = np.stack([tr.box.x[:4] for tr in tracks])
        box_covs = np.stack([tr.box.P[:4, :4] for tr in tracks]) + box_measurement_noise_batch(
            box_means_a[:, 3], cfg.box_noise_rel
        )
        d2_box = mahalanobis_sq(box_means_a, box_covs, self.boxes[rows])
        iou = box_iou(cxcywh_to_box(box_means_a), self.est.boxes_xyxy[rows])
        shape = self._shape_terms(tracks, rows)
        pose = pose_distance(np.stack([tr.rotmats for tr in tracks]), self.est.rotmats[rows])
        since = np.array([t - tr.last_hit_t for tr in tracks])
        pose_w = cfg.w_pose * np.exp(-since / cfg.lost_after_s)[:, None]
        app, app_w, app_far = self._app_cost(tracks, rows)
        cost = (
            cfg.w_iou * (1.0 - iou)
            + cfg.w_pos * (np.minimum(d2_root, 2 * self.gate_root) / 3.0 + np.minimum(growth, GROWTH_CAP)[:, None])
            + cfg.w_box * np.minimum(d2_box, 2 * self.gate_box) / 4.0
            + cfg.w_shape * np.minimum(shape, 4 * cfg.reid_shape_gate)
            + pose_w * pose / cfg.pose_noise_rad
            + app_w * app
        )
        allowed = ((d2_root < self.gate_root) | (d2_box < self.gate_box)) & (shape < 2 * cfg.reid_shape_gate)
        return np.where(allowed & ~app_far, cost, np.inf)

    def _app_cost(self, tracks: list[_Track], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Appearance evidence (T, D) (:func:`~.appearance.appearance_evidence`), its weight (T, D)
        (``w_app`` scaled by how much appearance the track has and how clean the detection's view
        is; 0 where unknown) and where the pair looks too different to be one person (T, D) bool."""
        cfg = self.cfg
        d = self._app_terms(tracks, rows)
        known = np.isfinite(d)
        trust = np.minimum(np.array([tr.app_weight for tr in tracks])[:, None], 1.0) * self.clean[rows][None, :]
        w = np.where(known, cfg.w_app * trust, 0.0)
        far = known & (trust > 0.5) & (np.nan_to_num(d) > cfg.app_gate)
        return appearance_evidence(d, cfg.app_same, cfg.app_other), w, far

    def _reid_cost(self, tracks: list[_Track], rows: np.ndarray) -> np.ndarray:
        """Cost of step 2 (lost tracks): root position + betas, both gated."""
        cfg = self.cfg
        d2_root, growth = self._root_terms(tracks, rows)
        shape = self._shape_terms(tracks, rows)
        # growth only ranks the lost tracks among themselves (its absolute size, which is
        # large after a long gap, must not push every re-identification past max_cost)
        app, app_w, app_far = self._app_cost(tracks, rows)
        cost = cfg.w_pos * (d2_root / 3.0 + (growth - growth.min())[:, None]) + cfg.w_shape * shape + app_w * app
        allowed = (d2_root < self.gate_root) & (shape < cfg.reid_shape_gate)
        # the filter's uncertainty grows without bound in a long gap: keep to what a person can reach
        since = np.array([self.pts_now - tr.last_hit_t for tr in tracks])
        allowed &= reachable(np.stack([tr.last_root for tr in tracks]), self.cam_t[rows], since)
        return np.where(allowed & ~app_far, cost, np.inf)

    def _match(self, tracks: list[_Track], rows: np.ndarray, cost_fn) -> tuple[list[tuple[_Track, int]], np.ndarray]:
        """Run one cascade step; returns matched (track, row) pairs and the rows left."""
        if not tracks or rows.size == 0:
            return [], rows
        self.pairs += len(tracks) * rows.size
        cost = cost_fn(tracks, rows)
        pairs = gated_assignment(cost, self.cfg.max_cost)
        used = np.zeros(rows.size, bool)
        out = []
        for ti, di in pairs:
            out.append((tracks[ti], int(rows[di])))
            used[di] = True
        return out, rows[~used]

    # ---------------------------------------------------------------- frames
    def step(self, rows: np.ndarray, t: float) -> None:
        """Process the (valid) rows of one frame taken at time ``t`` seconds."""
        cfg = self.cfg
        self.pts_now = t
        self._predict_all(t)
        active = [tr for tr in self.live if tr.confirmed and t - tr.last_hit_t <= cfg.lost_after_s]
        lost = [tr for tr in self.live if tr.confirmed and t - tr.last_hit_t > cfg.lost_after_s]
        tentative = [tr for tr in self.live if not tr.confirmed]
        matched: list[int] = []
        m1, rest = self._match(active, rows, lambda trs, r: self._motion_cost(trs, r, t))
        m2, rest = self._match(lost, rest, self._reid_cost)
        m3, rest = self._match(tentative, rest, lambda trs, r: self._motion_cost(trs, r, t))
        pairs = m1 + m2 + m3
        contested = self._contested([tr for tr, _ in pairs], t)
        for (tr, row), doubt in zip(pairs, contested):
            if doubt:
                tr.splits.append(len(tr.rows))  # a fresh tracklet: stitching decides who this is
            matched.append(row)
        self._hit_all(pairs, t)
        for row in rest:
            if not self._duplicates(int(row), matched):
                self._birth(int(row), t)
                matched.append(int(row))
        self.max_live = max(self.max_live, len(self.live))
        self._retire(t)

    def _contested(self, tracks: list[_Track], t: float) -> list[bool]:
        """For tracks about to be re-acquired: unseen for more than ``split_gap_s`` while another
        live track's predicted box overlaps theirs (a crossing or a group: the identity may have
        changed hands in the gap)."""
        gap = self.cfg.split_gap_s
        out = [False] * len(tracks)
        if gap <= 0 or self.cfg.stitch_window_s <= 0 or len(self.live) < 2:
            return out  # without stitching nothing would join the pieces again
        boxes = cxcywh_to_box(np.stack([tr.box.x[:4] for tr in self.live]))
        index = {id(tr): i for i, tr in enumerate(self.live)}
        for k, tr in enumerate(tracks):
            if t - tr.last_hit_t <= gap:
                continue
            i = index[id(tr)]
            iou = box_iou(boxes[i][None], boxes)[0]
            iou[i] = 0.0
            out[k] = bool(iou.max() > CONTACT_IOU)
        return out

    def _duplicates(self, row: int, others: list[int]) -> bool:
        if not others:
            return False
        o = np.asarray(others)
        iou = box_iou(self.est.boxes_xyxy[row][None], self.est.boxes_xyxy[o])[0]
        dist = np.linalg.norm(self.cam_t[o] - self.cam_t[row], axis=1)
        return bool(np.any((iou > DUPLICATE_IOU) & (dist < DUPLICATE_DIST_M)))

    def _retire(self, t: float) -> None:
        keep = []
        for tr in self.live:
            since = t - tr.last_hit_t
            if tr.confirmed and since > self.cfg.reid_window_s:
                self.done.append(tr)
            elif not tr.confirmed and since > self.cfg.tentative_max_miss_s:
                continue  # never confirmed: discarded with its rows
            else:
                keep.append(tr)
        self.live = keep

    def finish(self) -> list[np.ndarray]:
        """Rows of the confirmed tracklets, each time-ordered, ordered by first appearance (short
        ones too: stitching may join them before ``min_track_s`` applies to whole tracks); a
        track split where it came back from a contested gap gives one tracklet per piece."""
        tracks = self.done + [tr for tr in self.live if tr.confirmed]
        self.live = []
        tracks.sort(key=lambda tr: (tr.first_t, tr.birth))
        out = []
        for tr in tracks:
            rows = np.asarray(tr.rows, np.int64)
            out += [piece for piece in np.split(rows, tr.splits) if piece.size]
        return out


def frame_order(est: MeshEstimates) -> np.ndarray:
    """(N,) row order by frame, then by row content (box, score), then by row index.

    Sorting on content makes the result independent of how rows of one frame were
    ordered by whoever produced them (Ray ``groupby`` does not promise an order).
    """
    b = est.boxes_xyxy
    keys = (np.arange(len(est)), -est.scores, b[:, 3], b[:, 2], b[:, 1], b[:, 0], est.frame_idx)
    return np.lexsort(keys)


def valid_rows(est: MeshEstimates) -> np.ndarray:
    """(N,) bool: rows with finite values, a positive box and the root in front of the camera."""
    ok = np.isfinite(est.boxes_xyxy).all(1) & np.isfinite(est.cam_t).all(1) & np.isfinite(est.betas).all(1)
    ok &= np.isfinite(est.rotmats.reshape(len(est), -1)).all(1) & np.isfinite(est.pts)
    ok &= (est.boxes_xyxy[:, 2] > est.boxes_xyxy[:, 0]) & (est.boxes_xyxy[:, 3] > est.boxes_xyxy[:, 1])
    ok &= est.cam_t[:, 2] > 0
    return ok


def track_video(est: MeshEstimates, cfg: TrackConfig) -> tuple[np.ndarray, TrackStats]:
    """Identity of every row of one video's estimates (see :func:`track_video_tracklets`).

    Returns ``track_id`` (N,) int64 aligned with the input rows (``-1`` for rows of no kept
    track) and the :class:`TrackStats` counters.
    """
    ids, _, stats = track_video_tracklets(est, cfg)
    return ids, stats


def track_video_tracklets(est: MeshEstimates, cfg: TrackConfig) -> tuple[np.ndarray, np.ndarray, TrackStats]:
    """Online tracking, whole-video stitching and duplicate removal over one video's rows.

    est: rows of one video, any order.  Returns ``track_id`` (N,) and ``tracklet_id`` (N,)
    int64 aligned with the input rows: the final track of each row and the online tracklet it
    came from (both numbered by first appearance; ``-1`` for rows of no kept track: false
    detections, short or unconfirmed tracks, duplicates, invalid rows), and the counters.
    """
    n = len(est)
    ids = np.full(n, -1, np.int64)
    tracklet_ids = np.full(n, -1, np.int64)
    if n == 0:
        return ids, tracklet_ids, TrackStats(0, 0, 0, 0, 0, 0, 0)
    ok = valid_rows(est)
    if not ok.all():
        log.warning(
            "%s: %d of %d estimate rows are invalid (non-finite or behind the camera); not tracked",
            est.video_id,
            int((~ok).sum()),
            n,
        )
    order = frame_order(est)
    order = order[ok[order]]
    tracker = _Tracker(cfg, est)
    frames = est.frame_idx[order]
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if order.size else np.zeros(0, int)
    ends = np.r_[starts[1:], order.size]
    for s, e in zip(starts, ends):
        rows = order[s:e]
        tracker.step(rows, float(np.max(est.pts[rows])))
    online = tracker.finish()
    # two tracklets on one body: drop the smaller one's copies, then merge tracklets that follow
    # one body (alternating, or both present with overlapping boxes)
    label = np.full(n, -1, np.int64)
    for i, rows in enumerate(online):
        label[rows] = i
    drop = duplicate_rows(est, label)
    online = [rows[~drop[rows]] for rows in online]
    online, n_merged_away = merge_colocated(est, [rows for rows in online if rows.size], tracker.clean, cfg)
    apart: set[tuple[int, int]] = set()
    if cfg.stitch_window_s > 0:  # a cut piece is only useful when stitching can join it to others
        online, apart = split_on_change(est, online, tracker.clean, cfg)
    tracklets = [summarize(est, rows, tracker.clean) for rows in online]
    chains, n_pairs = stitch(tracklets, cfg, apart)
    track_of = np.full(n, -1, np.int64)
    tracklet_of = np.full(n, -1, np.int64)
    for k, chain in enumerate(chains):
        for ti in chain:
            track_of[tracklets[ti].rows] = k
            tracklet_of[tracklets[ti].rows] = ti
    late = duplicate_rows(est, track_of)  # stitched chains add no new copies; this guards the rule
    track_of[late] = -1
    tracklet_of[late] = -1
    drop |= late
    # whole tracks seen for less than min_track_s go (spanning it is not enough: a few scattered
    # detections chained over a long time are not a person); the rest are numbered by first appearance
    frame_dt = float(np.median(np.diff(np.unique(est.pts[order])))) if starts.size > 1 else 1.0
    min_rows = max(1, int(np.ceil(cfg.min_track_s / max(frame_dt, 1e-6) - 1e-6)))
    kept = []
    for k in range(len(chains)):
        rows = np.flatnonzero(track_of == k)
        if rows.size >= min_rows and float(est.pts[rows].max() - est.pts[rows].min()) >= cfg.min_track_s:
            kept.append((float(est.pts[rows].min()), k, rows))
    kept.sort(key=lambda x: (x[0], x[1]))
    for new_id, (_, _, rows) in enumerate(kept):
        ids[rows] = new_id
    used = sorted({int(t) for t in tracklet_of[ids >= 0]}, key=lambda t: (tracklets[t].t0, t))
    remap = {t: i for i, t in enumerate(used)}
    sel = ids >= 0
    tracklet_ids[sel] = [remap[int(t)] for t in tracklet_of[sel]]
    n_joins = sum(len(c) - 1 for c in chains)
    stats = TrackStats(
        n_frames=int(starts.size),
        n_rows=n,
        pair_evaluations=tracker.pairs,
        max_live_tracks=tracker.max_live,
        n_tracks_started=tracker.n_born,
        n_tracks_kept=len(kept),
        n_reidentified=tracker.n_reid,
        n_tracklets=len(online),
        n_joins=int(n_joins),
        stitch_pairs=int(n_pairs),
        n_duplicate_rows=int(drop.sum()) + n_merged_away,
    )
    return ids, tracklet_ids, stats


def attach_track_ids(
    est: MeshEstimates, track_id: np.ndarray, tracklet_id: np.ndarray | None = None
) -> TrackedEstimates:
    """Rows with ``track_id >= 0`` as :class:`TrackedEstimates`, sorted by (frame_idx, track_id).

    tracklet_id: (N,) the online tracklet of each row (None: the track id)."""
    keep = np.flatnonzero(track_id >= 0)
    keep = keep[np.lexsort((track_id[keep], est.frame_idx[keep]))]
    sub = est.select(keep)
    cols = {name: getattr(sub, name) for name in MeshEstimates.ROW_FIELDS}
    tl = (track_id if tracklet_id is None else tracklet_id)[keep].astype(np.int64)
    return TrackedEstimates(video_id=est.video_id, track_id=track_id[keep].astype(np.int64), tracklet_id=tl, **cols)


class TrackStage(BaseStage[MeshEstimates, TrackedEstimates]):
    """``MeshEstimates`` of one whole video -> ``TrackedEstimates`` (see module docstring).

    No weights and no state across calls: the Ray runner can run it as a plain task per
    ``groupby(video_id)`` group, the LocalRunner once per clip; both give the same rows.
    """

    resources = Resources(cpus=1.0)

    def __init__(self, cfg: TrackConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else TrackConfig()

    def __call__(self, est: MeshEstimates) -> TrackedEstimates:
        track_id, tracklet_id, stats = track_video_tracklets(est, self.cfg)
        log.info(
            "%s: %d rows, %d frames -> %d tracks (%d started, %d re-identified online, %d tracklets, "
            "%d joined by stitching, %d duplicate rows dropped)",
            est.video_id,
            stats.n_rows,
            stats.n_frames,
            stats.n_tracks_kept,
            stats.n_tracks_started,
            stats.n_reidentified,
            stats.n_tracklets,
            stats.n_joins,
            stats.n_duplicate_rows,
        )
        return attach_track_ids(est, track_id, tracklet_id)
