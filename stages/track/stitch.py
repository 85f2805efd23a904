"""Whole-video association: join the online tracker's tracklets across gaps, then remove duplicates.

The online tracker (:mod:`.tracker`) sees one frame at a time; a person hidden for longer
than its re-identification window, or re-detected with a different box, comes back as a new
tracklet.  A clip is processed as a whole in both runners, so this pass looks at all
tracklets at once:

1. **Summaries.**  Per tracklet: start and end times, the root position and velocity at both
   ends (least squares over the first / last ``END_S`` seconds), the mean body shape and its
   spread, and the appearance at both ends (the mean descriptor of the clean views of the
   first / last ``APP_END_S`` seconds, :mod:`.appearance`).
2. **Candidate pairs** ``i -> j``: ``j`` starts after ``i`` ends (no time overlap, ever), within
   ``stitch_window_s``.  Found by a sorted sweep, so their number grows with the tracklets
   alive around each gap, not with the square of all tracklets.
3. **Cost** of a pair: appearance distance of ``i``'s end and ``j``'s start, body-shape
   distance, and the Mahalanobis distance between ``i``'s end extrapolated to ``j``'s start
   (and ``j``'s start extrapolated back to ``i``'s end) and the observed positions, with an
   uncertainty that grows with the gap; gated (a pair must look alike, or be where the motion
   says when appearance is unknown).
4. **Global solution.**  Each tracklet gets at most one successor and one predecessor: a
   minimum-cost assignment of ends to starts where leaving an end unmatched costs
   ``stitch_max_cost`` (:func:`~.cost.gated_assignment`), solved per connected component of
   the candidate graph.  Chains of pairs are the final tracks; edges only go forward in time,
   so chains never overlap themselves.
5. **Duplicates.**  Where two final tracks have rows in the same frame that are the same
   person (one box mostly inside the other and the roots close), the rows of the track with
   fewer rows are dropped: never two tracks on one person in one frame.

Everything is a pure function of the rows and their order-independent summaries:
deterministic, and the same whichever runner calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmrflow.pipeline.config import TrackConfig
from hmrflow.pipeline.types import MeshEstimates
from hmrflow.stages.track.appearance import appearance_distance, appearance_distance_rows, appearance_evidence
from hmrflow.stages.track.cost import gated_assignment, mahalanobis_sq, reachable
from hmrflow.stages.track.kalman import root_measurement_noise

#: Seconds at each end of a tracklet from which its end position and velocity are fitted.
END_S = 0.5
#: Seconds at each end of a tracklet whose clean views make its end appearance.
APP_END_S = 1.0
#: Walking speeds above this (m/s) are estimation noise: extrapolation is capped.
MAX_SPEED = 2.5
#: Std of the unknown velocity change over a gap, m/s (people stop, turn, speed up).
VEL_CHANGE_STD = 0.6
#: Appearance distances below this join tracklets even where the motion disagrees (re-entry
#: at another place, or a monocular depth jump).
STRONG_APP = 0.18
#: Most the motion disagreement can cost (in units of a 1-sigma-per-axis miss).
MOTION_CAP = 3.0
#: Rows of two tracks in one frame are one person when the smaller box lies this much inside
#: the other (intersection over the smaller area) and the roots are this close: metres plus a
#: fraction of the distance (monocular depth of a partial box is rough).
DUP_CONTAIN = 0.8
DUP_DIST_M = 0.5
DUP_DIST_REL = 0.15
#: A tracklet is cut where the mean appearance of this many rows before and after a row differs
#: by this much evidence (+1 = as different as two people typically are); windows must hold
#: views worth at least half of ``SHARED_MIN`` per row.
CHANGE_ROWS = 8
CHANGE_EVIDENCE = 0.6
#: ...where the mean root of the two windows also jumps by this much (m plus a share of the
#: distance), or by ``CHANGE_EVIDENCE_ALONE`` of evidence whatever the roots do.
CHANGE_JUMP_M = 0.4
CHANGE_JUMP_REL = 0.1
CHANGE_EVIDENCE_ALONE = 1.5
SHARED_MIN = 0.7
#: Two tracklets that share time are one person when, in this share of the comparisons, their
#: rows in common frames are one body (boxes overlapping by ``COLOCATED_CONTAIN`` of the smaller,
#: roots close) and their other rows lie this close to the other's trajectory (metres plus a
#: fraction of the distance).
COLOCATED_SHARE = 0.8
COLOCATED_CONTAIN = 0.6
#: ...with at least this many comparisons (a few frames of contact prove nothing).
COLOCATED_MIN = 5
INTERLEAVE_DIST_M = 0.3
INTERLEAVE_DIST_REL = 0.12


@dataclass(frozen=True)
class Tracklet:
    """What stitching needs of one tracklet.

    rows: (n,) row indices, time-ordered.  t0, t1: first and last time (s).
    root0, root1, vel0, vel1: (3,) root position (m) and velocity (m/s) at the start and end.
    betas, betas_std: (B,) mean shape and its per-coefficient spread.
    app0, app1: (D,) appearance at the start and end (zeros: unknown).
    """

    rows: np.ndarray
    t0: float
    t1: float
    root0: np.ndarray
    root1: np.ndarray
    vel0: np.ndarray
    vel1: np.ndarray
    betas: np.ndarray
    betas_std: np.ndarray
    app0: np.ndarray
    app1: np.ndarray


def _end_fit(t: np.ndarray, x: np.ndarray, w: np.ndarray, at: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line through (t, x (n, 3)): its value at ``at`` and its slope (capped)."""
    if len(t) < 2 or np.ptp(t) < 1e-6:
        return np.average(x, axis=0, weights=w), np.zeros(3)
    tc = t - at
    a = np.stack([np.ones_like(tc), tc], 1) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(a, x * np.sqrt(w)[:, None], rcond=None)
    pos, vel = coef[0], coef[1]
    speed = float(np.linalg.norm(vel))
    if speed > MAX_SPEED:
        vel = vel * (MAX_SPEED / speed)
    return pos, vel


def summarize(est: MeshEstimates, rows: np.ndarray, clean: np.ndarray) -> Tracklet:
    """The :class:`Tracklet` of ``rows`` of ``est`` (``clean``: (N,) weight of each row's view)."""
    rows = rows[np.argsort(est.pts[rows], kind="stable")]
    t = est.pts[rows].astype(np.float64)
    x = est.cam_t[rows].astype(np.float64)
    w = np.clip(np.nan_to_num(est.confidence[rows].astype(np.float64)), 0.05, 1.0)
    t0, t1 = float(t[0]), float(t[-1])
    head, tail = t <= t0 + END_S, t >= t1 - END_S
    root0, vel0 = _end_fit(t[head], x[head], w[head], t0)
    root1, vel1 = _end_fit(t[tail], x[tail], w[tail], t1)
    b = est.betas[rows].astype(np.float64)
    betas = np.average(b, axis=0, weights=w)
    betas_std = np.sqrt(np.average((b - betas) ** 2, axis=0, weights=w))
    app = est.appearance[rows].astype(np.float64)
    cw = clean[rows]

    def app_mean(sel: np.ndarray) -> np.ndarray:
        ws = cw[sel]
        return (app[sel] * ws[:, None]).sum(0) / ws.sum() if ws.sum() > 0 else np.zeros(app.shape[1])

    return Tracklet(
        rows=rows,
        t0=t0,
        t1=t1,
        root0=root0,
        root1=root1,
        vel0=vel0,
        vel1=vel1,
        betas=betas,
        betas_std=betas_std,
        app0=app_mean(t <= t0 + APP_END_S),
        app1=app_mean(t >= t1 - APP_END_S),
    )


def candidate_pairs(tracklets: list[Tracklet], window_s: float) -> list[tuple[int, int]]:
    """``(i, j)`` with ``j`` starting after ``i`` ends and within ``window_s``; sorted sweep."""
    starts = np.array([tr.t0 for tr in tracklets])
    order = np.argsort(starts, kind="stable")
    s_sorted = starts[order]
    out = []
    for i, tr in enumerate(tracklets):
        lo = int(np.searchsorted(s_sorted, tr.t1, side="right"))
        hi = int(np.searchsorted(s_sorted, tr.t1 + window_s, side="right"))
        out += [(i, int(j)) for j in order[lo:hi]]
    return sorted(out)


def pair_cost(a: Tracklet, b: Tracklet, cfg: TrackConfig) -> float:
    """Cost of joining ``b`` after ``a`` (see module docstring); ``inf`` when gated out."""
    gap = b.t0 - a.t1
    if gap <= 0 or not reachable(a.root1, b.root0, gap)[0, 0]:
        return float("inf")
    # both ends extrapolated across the gap, each with an uncertainty growing with the gap
    fwd = a.root1 + a.vel1 * gap
    bwd = b.root0 - b.vel0 * gap
    grow = np.eye(3) * (VEL_CHANGE_STD * gap) ** 2
    d2_f = mahalanobis_sq(
        fwd[None], (root_measurement_noise(fwd, cfg.pos_noise_m, cfg.depth_noise_rel) * 2 + grow)[None], b.root0[None]
    )[0, 0]
    d2_b = mahalanobis_sq(
        bwd[None], (root_measurement_noise(bwd, cfg.pos_noise_m, cfg.depth_noise_rel) * 2 + grow)[None], a.root1[None]
    )[0, 0]
    d2 = min(d2_f, d2_b)
    std = np.sqrt(a.betas_std**2 + b.betas_std**2 + cfg.shape_noise**2)
    shape = float(np.mean(((a.betas - b.betas) / std) ** 2))
    app = appearance_distance(a.app1[None], b.app0[None])[0, 0]
    gate_root = float(cfg.gate_chi2)
    if shape > cfg.reid_shape_gate:
        return float("inf")
    if np.isfinite(app):
        if app > cfg.app_gate or (d2 > gate_root and app > STRONG_APP):
            return float("inf")
    elif d2 > gate_root:
        return float("inf")
    app_cost = cfg.w_app * float(appearance_evidence(app, cfg.app_same, cfg.app_other))
    # the motion term is capped: a person may come back elsewhere (re-entry, a depth jump);
    # where it disagrees only a strong appearance match gets past the gate above
    motion = min(d2 / 3.0, MOTION_CAP)
    return float(cfg.w_pos * motion + cfg.w_shape * shape + app_cost + gap / cfg.stitch_window_s)


def _components(n: int, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
    """Connected components (union-find) of the candidate graph, each sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [np.array(g) for g in groups.values() if len(g) > 1]


def stitch(
    tracklets: list[Tracklet], cfg: TrackConfig, apart: set[tuple[int, int]] | frozenset = frozenset()
) -> tuple[list[list[int]], int]:
    """Chains of tracklet indices (each time-ordered; every tracklet in exactly one chain) and the
    number of candidate pairs costed.  Chains are ordered by their first start time.
    apart: pairs ``(i, j)`` never joined (pieces cut apart by :func:`split_on_change`)."""
    n = len(tracklets)
    succ = [-1] * n
    pairs = candidate_pairs(tracklets, cfg.stitch_window_s) if cfg.stitch_window_s > 0 else []
    pairs = [p for p in pairs if p not in apart]
    costs = {p: pair_cost(tracklets[p[0]], tracklets[p[1]], cfg) for p in pairs}
    live = [p for p, c in costs.items() if np.isfinite(c) and c < cfg.stitch_max_cost]
    for comp in _components(n, live):
        local = {int(g): k for k, g in enumerate(comp)}
        m = np.full((len(comp), len(comp)), np.inf)
        for i, j in live:
            if i in local and j in local:
                m[local[i], local[j]] = costs[(i, j)]
        for a, b in gated_assignment(m, cfg.stitch_max_cost):
            succ[int(comp[a])] = int(comp[b])
    has_pred = {j for j in succ if j >= 0}
    chains = []
    for i in range(n):
        if i in has_pred:
            continue
        chain = [i]
        while succ[chain[-1]] >= 0:
            chain.append(succ[chain[-1]])
        chains.append(chain)
    chains.sort(key=lambda c: (tracklets[c[0]].t0, c[0]))
    return chains, len(pairs)


def duplicate_rows(est: MeshEstimates, track_of: np.ndarray) -> np.ndarray:
    """(N,) bool: rows to drop so no two tracks cover one person in one frame.

    track_of: (N,) track of every row (-1: none).  Two rows of different tracks in one frame
    are one person when the smaller box lies ``DUP_CONTAIN`` inside the other and the roots are
    within ``DUP_DIST_M``; the row of the track with fewer rows goes (the lower track id on a tie
    keeps its row).
    """
    n = len(est)
    drop = np.zeros(n, bool)
    ids, counts = np.unique(track_of[track_of >= 0], return_counts=True)
    size = dict(zip(ids.tolist(), counts.tolist()))
    rows = np.flatnonzero(track_of >= 0)
    order = rows[np.argsort(est.frame_idx[rows], kind="stable")]
    f = est.frame_idx[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]]) if order.size else np.zeros(0, int)
    b = est.boxes_xyxy.astype(np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    for s, e in zip(starts, np.r_[starts[1:], order.size]):
        fr = order[s:e]
        if fr.size < 2:
            continue
        for x in range(fr.size):
            for y in range(x + 1, fr.size):
                r1, r2 = int(fr[x]), int(fr[y])
                if track_of[r1] == track_of[r2] or drop[r1] or drop[r2]:
                    continue
                iw = min(b[r1, 2], b[r2, 2]) - max(b[r1, 0], b[r2, 0])
                ih = min(b[r1, 3], b[r2, 3]) - max(b[r1, 1], b[r2, 1])
                inter = max(iw, 0.0) * max(ih, 0.0)
                small = min(area[r1], area[r2])
                if small <= 0 or inter / small < DUP_CONTAIN:
                    continue
                p1, p2 = est.cam_t[r1].astype(np.float64), est.cam_t[r2].astype(np.float64)
                far = max(np.linalg.norm(p1), np.linalg.norm(p2))
                if np.linalg.norm(p1 - p2) > DUP_DIST_M + DUP_DIST_REL * far:
                    continue
                t1, t2 = int(track_of[r1]), int(track_of[r2])
                loser = r1 if (size[t1], -t1) < (size[t2], -t2) else r2
                drop[loser] = True
    return drop


def split_on_change(
    est: MeshEstimates, pieces: list[np.ndarray], clean: np.ndarray, cfg: TrackConfig
) -> tuple[list[np.ndarray], set[tuple[int, int]]]:
    """Cut tracklets where the person seems to change: the mean appearance of the ``CHANGE_ROWS``
    rows before a row and of those from it on differ by more than ``CHANGE_EVIDENCE`` (in
    :func:`~.appearance.appearance_evidence` units; a hand-over from a person who goes behind
    something to one who comes out of it).  Recursive; pieces stay in birth order.

    Returns the pieces and the pairs of piece indices that were cut apart (stitching must not
    join them back: they were cut because they look like two people).
    """
    out: list[np.ndarray] = []
    apart: set[tuple[int, int]] = set()
    for rows in pieces:
        parts = _split_piece(est, rows, clean, cfg)
        base = len(out)
        apart |= {(base + k, base + k + 1) for k in range(len(parts) - 1)}
        out += parts
    return out, apart


def _split_piece(est: MeshEstimates, rows: np.ndarray, clean: np.ndarray, cfg: TrackConfig) -> list[np.ndarray]:
    w = CHANGE_ROWS
    n = len(rows)
    if n < 2 * w:
        return [rows]
    app = est.appearance[rows].astype(np.float64) * clean[rows][:, None]
    weight = clean[rows].astype(np.float64)
    csum = np.vstack([np.zeros(app.shape[1]), np.cumsum(app, 0)])
    cw = np.r_[0.0, np.cumsum(weight)]
    cut = np.arange(w, n - w + 1)  # a split before row ``cut``
    before = (csum[cut] - csum[cut - w]) / np.maximum(cw[cut] - cw[cut - w], 1e-9)[:, None]
    after = (csum[cut + w] - csum[cut]) / np.maximum(cw[cut + w] - cw[cut], 1e-9)[:, None]
    ok = (cw[cut] - cw[cut - w] > 0.5 * w * SHARED_MIN) & (cw[cut + w] - cw[cut] > 0.5 * w * SHARED_MIN)
    d = appearance_distance_rows(before, after)
    z = np.where(ok & np.isfinite(d), appearance_evidence(d, cfg.app_same, cfg.app_other), -np.inf)
    # a moderate change of looks counts only where the position jumps too (two people are rarely
    # at one place); a large one counts alone (two people crossing at one depth)
    root = est.cam_t[rows].astype(np.float64)
    rsum = np.vstack([np.zeros(3), np.cumsum(root, 0)])
    jump = np.linalg.norm((rsum[cut + w] - rsum[cut]) / w - (rsum[cut] - rsum[cut - w]) / w, axis=1)
    far = jump > CHANGE_JUMP_M + CHANGE_JUMP_REL * np.linalg.norm(rsum[cut] - rsum[cut - w], axis=1) / w
    z = np.where(far | (z >= CHANGE_EVIDENCE_ALONE), z, -np.inf)
    best = int(np.argmax(z))
    if not np.isfinite(z[best]) or z[best] < CHANGE_EVIDENCE:
        return [rows]
    k = int(cut[best])
    return _split_piece(est, rows[:k], clean, cfg) + _split_piece(est, rows[k:], clean, cfg)


def _colocated(est: MeshEstimates, r1: np.ndarray, r2: np.ndarray, contain: float) -> np.ndarray:
    """(K,) bool per row pair: the boxes overlap (the smaller one at least ``contain`` inside the
    other) and the roots are within ``DUP_DIST_M`` plus ``DUP_DIST_REL`` of the distance."""
    b1, b2 = est.boxes_xyxy[r1].astype(np.float64), est.boxes_xyxy[r2].astype(np.float64)
    iw = np.minimum(b1[:, 2], b2[:, 2]) - np.maximum(b1[:, 0], b2[:, 0])
    ih = np.minimum(b1[:, 3], b2[:, 3]) - np.maximum(b1[:, 1], b2[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    small = np.minimum(area(b1), area(b2))
    p1, p2 = est.cam_t[r1].astype(np.float64), est.cam_t[r2].astype(np.float64)
    far = np.maximum(np.linalg.norm(p1, axis=1), np.linalg.norm(p2, axis=1))
    near = np.linalg.norm(p1 - p2, axis=1) <= DUP_DIST_M + DUP_DIST_REL * far
    return (inter >= contain * np.maximum(small, 1e-9)) & near


def merge_colocated(
    est: MeshEstimates, pieces: list[np.ndarray], clean: np.ndarray, cfg: TrackConfig
) -> tuple[list[np.ndarray], int]:
    """Merge tracklets that are one person tracked twice: over the time they share, their rows in
    common frames are one body (boxes overlapping, roots close) and their rows in the other's
    missing frames lie on the other's trajectory, in ``COLOCATED_SHARE`` of the cases; and they do
    not look like two people.  Two people seen at once are apart in most of their common frames.

    In a common frame the merged track keeps the row with the higher detector score.
    pieces: row indices of each tracklet, in birth order.  Returns the merged pieces (each sorted by
    time, ordered by first time, then birth order) and the number of rows dropped.
    """
    if len(pieces) < 2:
        return pieces, 0
    pts = est.pts.astype(np.float64)
    merged: dict[int, np.ndarray] = {i: np.asarray(pieces[i]) for i in range(len(pieces))}
    dropped = 0
    for b in sorted(merged, key=lambda i: (len(merged[i]), i)):  # small ones into big ones
        if b not in merged:
            continue
        rb = merged[b]
        for a in sorted(merged, key=lambda i: (-len(merged[i]), i)):
            if a == b or a not in merged or len(merged[a]) < len(rb):
                continue
            ra = merged[a]
            ta, tb = pts[ra], pts[rb]
            if tb.max() < ta.min() or tb.min() > ta.max():
                continue  # no common time: stitching's business
            fa = {int(f): int(r) for f, r in zip(est.frame_idx[ra], ra)}
            common = np.array([fa.get(int(f), -1) for f in est.frame_idx[rb]])
            shared = common >= 0
            votes = []
            if shared.any():
                votes.append(_colocated(est, common[shared], rb[shared], COLOCATED_CONTAIN))
            inside = ~shared & (tb >= ta.min()) & (tb <= ta.max())
            if inside.any():
                srt = np.argsort(ta, kind="stable")
                path = np.stack(
                    [np.interp(tb[inside], ta[srt], est.cam_t[ra][srt][:, k].astype(np.float64)) for k in range(3)], 1
                )
                tol = INTERLEAVE_DIST_M + INTERLEAVE_DIST_REL * np.linalg.norm(path, axis=1)
                votes.append(np.linalg.norm(est.cam_t[rb][inside].astype(np.float64) - path, axis=1) <= tol)
            v = np.concatenate(votes) if votes else np.zeros(0, bool)
            if v.size < COLOCATED_MIN or v.mean() < COLOCATED_SHARE:
                continue
            app = appearance_distance(_mean_app(est, ra, clean)[None], _mean_app(est, rb, clean)[None])[0, 0]
            if np.isfinite(app) and appearance_evidence(app, cfg.app_same, cfg.app_other) > 0.5:
                continue
            # one row per frame: in a common frame the better-scored detection stays
            keep_b = np.ones(len(rb), bool)
            drop_a = np.zeros(len(ra), bool)
            pos_a = {int(r): i for i, r in enumerate(ra)}
            for i in np.flatnonzero(shared):
                if est.scores[rb[i]] > est.scores[common[i]]:
                    drop_a[pos_a[int(common[i])]] = True
                else:
                    keep_b[i] = False
            joined = np.concatenate([ra[~drop_a], rb[keep_b]])
            dropped += int(drop_a.sum() + (~keep_b).sum())
            merged[a] = joined[np.argsort(pts[joined], kind="stable")]
            del merged[b]
            break
    out = [merged[i] for i in sorted(merged, key=lambda i: (float(pts[merged[i]].min()), i))]
    return out, dropped


def _mean_app(est: MeshEstimates, rows: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """(D,) mean descriptor of ``rows`` weighted by how clean their views are (zeros: unknown)."""
    w = clean[rows]
    return (est.appearance[rows] * w[:, None]).sum(0) / w.sum() if w.sum() > 0 else np.zeros(est.appearance.shape[1])
