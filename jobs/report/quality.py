"""Per-track quality in plain words, for the QC report.

A track spans the frames from its first to its last appearance.  Within that span:

* **seen**: frames where the person was detected (``observed`` True);
* **filled**: frames the refiner filled in from the motion prior (``observed`` False);
* **missing**: frames with no row at all (holes the refiner left open);
* a **gap** is a run of frames that were not seen (filled or missing); the longest one is
  reported in seconds;
* **joins**: places where the tracker re-identified the person after losing them
  (``manifest.json`` ``tracks[].joins``): worth a look, the identity may have switched;
* **confidence**: the pose estimator's own 0-1 score on the seen frames (trained to be
  ``exp(-joint error / 10 cm)``: higher means it expects its joints to be closer);
* **sudden turns**: steps between consecutive frames where the whole body turns faster than
  :data:`MAX_TURN_DEG_S` (world frame when the output has one): no person turns that fast,
  so these are almost always the estimate flipping front and back; the angles jump there.

The verdict (:func:`verdict`) applies the thresholds below: **poor** when any of the
``POOR_*`` limits is crossed, **usable with care** when any ``CARE_*`` limit is, else
**good**; the reasons are listed in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hmrflow.jobs.export.reading import TrackData

#: Seen in fewer than this share of its span: poor (the curves are mostly guesses).
POOR_SEEN = 0.5
#: Seen in fewer than this share of its span: usable with care.
CARE_SEEN = 0.8
#: A gap longer than this (s) hides at least a whole stride: usable with care.
CARE_GAP_S = 1.0
#: A track shorter than this (s) is too short for joint-angle curves or gait: poor.
POOR_DURATION_S = 1.0
#: Mean confidence below this (expected joint error above about 23 cm): poor.
POOR_CONFIDENCE = 0.1
#: Mean confidence below this (expected joint error above about 16 cm): usable with care.
CARE_CONFIDENCE = 0.2
#: Whole-body turning speed (deg/s) above which a frame step is flagged as a sudden turn
#: (fast pirouettes reach about 1000 deg/s; a front/back flip of the estimate is 180 deg in a frame or two).
MAX_TURN_DEG_S = 1500.0


@dataclass(frozen=True)
class TrackQuality:
    """Counts and verdict of one track (see the module doc for the definitions).

    n_rows: rows in the output; span_frames: frames from the first to the last appearance;
    duration_s: that span in seconds; seen_share: n_seen / span_frames (0 for an empty track);
    longest_gap_s: 0 without gaps; mean_confidence: NaN when no frame was seen;
    n_sudden_turns: frame steps turning faster than :data:`MAX_TURN_DEG_S`.
    """

    track_id: int
    n_rows: int
    span_frames: int
    n_seen: int
    n_filled: int
    n_missing: int
    n_joins: int
    duration_s: float
    seen_share: float
    longest_gap_s: float
    mean_confidence: float
    verdict: str
    reasons: tuple[str, ...]
    n_sudden_turns: int = 0

    @property
    def verdict_line(self) -> str:
        """``"good"`` or ``"usable with care: 2.1 s gap"`` (verdict and its reasons)."""
        return self.verdict + (": " + "; ".join(self.reasons) if self.reasons else "")


def seconds(v: float) -> str:
    """A duration in plain figures: one decimal from 1 s on, two significant digits below."""
    return f"{v:.1f} s" if v >= 0.95 else f"{v:.2g} s"


def _not_seen_runs(frame_idx: np.ndarray, observed: np.ndarray) -> list[int]:
    """Lengths (frames) of the runs of not-seen frames inside the span of (T,) ``frame_idx``."""
    seen = np.asarray(frame_idx, np.int64)[np.asarray(observed, bool)]
    if seen.size == 0:
        return [int(frame_idx[-1] - frame_idx[0] + 1)] if len(frame_idx) else []
    # before the first / after the last seen frame (filled rows at the ends) and between seen frames
    runs = [int(seen[0] - frame_idx[0]), int(frame_idx[-1] - seen[-1])]
    runs += (np.diff(seen) - 1).tolist()
    return [r for r in runs if r > 0]


def verdict(
    seen_share: float,
    longest_gap_s: float,
    duration_s: float,
    mean_confidence: float,
    n_rows: int,
    n_posed: int | None = None,
    n_sudden_turns: int = 0,
) -> tuple[str, tuple[str, ...]]:
    """("good" | "usable with care" | "poor", reasons in plain words) from the thresholds above.

    n_posed: rows with a finite pose (default all); none makes the track poor.
    n_sudden_turns: any makes a good track usable with care.
    """
    if n_rows == 0:
        return "poor", ("no frames",)
    poor: list[str] = []
    if n_posed == 0:
        poor.append("no pose in any frame")
    care: list[str] = []
    pct = f"seen in {100 * seen_share:.0f}% of frames"
    if seen_share < POOR_SEEN:
        poor.append(pct)
    elif seen_share < CARE_SEEN:
        care.append(pct)
    if duration_s < POOR_DURATION_S:
        poor.append(f"only {seconds(duration_s)} long")
    if longest_gap_s > CARE_GAP_S:
        care.append(f"{seconds(longest_gap_s)} gap")
    if not np.isfinite(mean_confidence) or mean_confidence < POOR_CONFIDENCE:
        poor.append("low confidence" if np.isfinite(mean_confidence) else "never detected")
    elif mean_confidence < CARE_CONFIDENCE:
        care.append("low confidence")
    if n_sudden_turns:
        care.append(f"{n_sudden_turns} sudden turn{'s' if n_sudden_turns > 1 else ''} (front/back flips?)")
    if poor:
        return "poor", tuple(poor + care)
    if care:
        return "usable with care", tuple(care)
    return "good", ()


def sudden_turns(track: TrackData, max_deg_s: float = MAX_TURN_DEG_S) -> np.ndarray:
    """(K,) row indices ``i`` where the body's orientation from row ``i`` to ``i + 1`` turns
    faster than ``max_deg_s`` (world orientation when the track has one, else the camera-frame
    root; time from ``pts``, so skipped frames are allowed their time)."""
    from scipy.spatial.transform import Rotation

    root = track.world_orient if track.has_world else np.asarray(track.poses)[:, :3]
    if root is None or len(track) < 2:
        return np.zeros(0, np.int64)
    root = np.asarray(root, np.float64)
    ok = np.isfinite(root).all(axis=1)
    rot = Rotation.from_rotvec(np.where(ok[:, None], root, 0.0))
    step_deg = np.degrees((rot[:-1].inv() * rot[1:]).magnitude())
    dt = np.diff(np.asarray(track.pts, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(dt > 0, step_deg / dt, np.inf)
    flagged = ok[:-1] & ok[1:] & (speed > max_deg_s)
    return np.flatnonzero(flagged)


def track_quality(track: TrackData, fps: float | None = None, joins: Sequence[Any] = ()) -> TrackQuality:
    """Quality of one track.

    fps: the video's frame rate (default the track's own, :attr:`TrackData.frame_rate`);
    joins: the track's ``joins`` list from ``manifest.json`` (only its length is used).
    """
    rate = float(fps) if fps is not None and np.isfinite(fps) and fps > 0 else track.frame_rate
    n = len(track)
    obs = np.asarray(track.observed, bool)
    if n == 0:
        span = n_seen = 0
        runs: list[int] = []
        conf = float("nan")
    else:
        span = int(track.frame_idx[-1] - track.frame_idx[0] + 1)
        n_seen = int(obs.sum())
        runs = _not_seen_runs(track.frame_idx, obs)
        c = np.asarray(track.confidence, np.float64)[obs]
        c = c[np.isfinite(c)]
        conf = float(c.mean()) if c.size else float("nan")
    share = n_seen / span if span else 0.0
    gap_s = max(runs, default=0) / rate
    duration = span / rate
    posed = int((np.isfinite(track.poses).all(axis=1) & np.isfinite(track.transl).all(axis=1)).sum()) if n else 0
    turns = int(sudden_turns(track).size) if n else 0
    v, reasons = verdict(share, gap_s, duration, conf, n, posed, turns)
    return TrackQuality(
        track_id=track.track_id,
        n_rows=n,
        span_frames=span,
        n_seen=n_seen,
        n_filled=n - n_seen,
        n_missing=span - n,
        n_joins=len(joins),
        duration_s=duration,
        seen_share=share,
        longest_gap_s=gap_s,
        mean_confidence=conf,
        verdict=v,
        reasons=reasons,
        n_sudden_turns=turns,
    )
