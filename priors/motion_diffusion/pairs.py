"""Windows of the pipeline's own tracks paired with ground truth (what the feature-conditioned
denoiser is trained on beside the noise-model windows).

The pairs come from ``hmrflow train prior-pairs`` (:mod:`hmrflow.jobs.train.prior_pairs`): one
``.npz`` per rendered clip with every track on its frame grid (estimates, confidence, image
features, observed flag, the matched ground-truth person and its camera-frame motion).

A window is ``window`` consecutive frames of one track (short tracks are padded at the end
with unobserved copies of the last frame, as refinement does).  Augmentations that keep the
data real: extra holes (frames marked unobserved, their estimates and features hidden) so gap
filling is learned on the estimator's real errors around the hole, and features hidden for
whole windows (so the same model still works for an estimator it has no features of).  The
loss mask keeps the frames whose ground truth is the window's main person (an identity
switch inside a window is not something the denoiser could undo).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

_KEYS = (
    "observed",
    "rotmats",
    "transl",
    "confidence",
    "feature",
    "betas",
    "person",
    "gt_rotmats",
    "gt_transl",
    "gt_betas",
    "gt_valid",
)


#: a track whose person's root moves slower than this (m/s, median) counts as "in place"
IN_PLACE_SPEED = 0.4


@dataclass
class PairTrack:
    """One track on its frame grid (T frames); arrays as in the pairs files."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["observed"])

    @property
    def in_place(self) -> bool:
        """The person mostly stays in place (exercises, gestures) rather than walking."""
        a = self.arrays
        v = a["gt_valid"]
        if v.sum() < 2:
            return False
        step = np.linalg.norm(np.diff(a["gt_transl"][v], axis=0), axis=-1)
        return bool(np.median(step) * 30.0 < IN_PLACE_SPEED)


def track_sampling_weights(tracks: list[PairTrack], window: int) -> np.ndarray:
    """(N,) probabilities of drawing a window from each track: proportional to the windows a
    track holds, with in-place and moving people given half of the draws each (crowded scenes
    are mostly walkers, so otherwise the in-place motions of quieter scenes are rare)."""
    n = np.array([max(len(t) - window + 1, 1) for t in tracks], np.float64)
    still = np.array([t.in_place for t in tracks])
    w = n.copy()
    for group in (still, ~still):
        if group.any() and (~group).any():
            w[group] *= 0.5 / n[group].sum()
    return w / w.sum()


def load_pair_tracks(folders: list[str | Path], min_observed: int = 8) -> list[PairTrack]:
    """All tracks of every ``*.npz`` under ``folders`` with at least ``min_observed`` matched
    observed frames."""
    tracks: list[PairTrack] = []
    files = sorted(f for d in folders for f in Path(d).glob("*.npz"))
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            data = {k: z[k] for k in (*_KEYS, "track_id")}
        tid = data.pop("track_id")
        for k in np.unique(tid):
            sel = tid == k
            arr = {key: v[sel] for key, v in data.items()}
            if int((arr["observed"] & arr["gt_valid"]).sum()) >= min_observed:
                tracks.append(PairTrack(arr))
    log.info(
        "pairs: %d tracks (%d in place), %d frames from %d files",
        len(tracks),
        sum(t.in_place for t in tracks),
        sum(len(t) for t in tracks),
        len(files),
    )
    return tracks


def feature_stats(tracks: list[PairTrack]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (FEATURE_DIM,) of the observed rows' features (std floored)."""
    f = np.concatenate([t.arrays["feature"][t.arrays["observed"]].astype(np.float32) for t in tracks])
    mean, std = f.mean(0), f.std(0)
    return torch.from_numpy(mean), torch.from_numpy(np.maximum(std, 1e-3))


def sample_pair_windows(
    tracks: list[PairTrack],
    rng: np.random.Generator,
    n: int,
    window: int,
    hole_prob: float = 0.5,
    max_hole: int = 30,
    drop_prob: float = 0.03,
    feature_drop: float = 0.15,
) -> dict[str, torch.Tensor]:
    """``n`` random windows: tensors rot (n, W, 24, 3, 3), transl (n, W, 3), observed (n, W),
    confidence (n, W), feature (n, W, F) float32, feature_present (n, W), clean_rot, clean_transl,
    loss_mask (n, W) bool, betas (n, 10) median estimated shape over the observed frames,
    gt_betas (n, 10) the main person's shape."""
    probs = track_sampling_weights(tracks, window)
    out: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "rot",
            "transl",
            "observed",
            "confidence",
            "feature",
            "feature_present",
            "clean_rot",
            "clean_transl",
            "loss_mask",
            "betas",
            "gt_betas",
        )
    }
    for _ in range(n):
        a = tracks[int(rng.choice(len(tracks), p=probs))].arrays
        t = len(a["observed"])
        s = int(rng.integers(0, max(t - window, 0) + 1))
        idx = np.arange(s, s + window)
        inside = idx < t
        idx = np.minimum(idx, t - 1)
        obs = a["observed"][idx] & inside
        if rng.random() < hole_prob:
            length = int(rng.integers(1, max_hole + 1))
            h0 = int(rng.integers(0, window))
            obs[h0 : h0 + length] = False
        obs &= rng.random(window) >= drop_prob
        if not obs.any():  # keep at least one observed frame (refinement never sees none)
            first = np.flatnonzero(a["observed"][idx] & inside)
            if len(first):
                obs[first[0]] = True
        present = obs & (np.abs(a["feature"][idx]).max(1) > 0)
        if rng.random() < feature_drop:
            present[:] = False
        person = a["person"][idx]
        valid = a["gt_valid"][idx] & inside
        if valid.any():
            main = np.bincount(person[valid]).argmax()
            valid &= person == main
        out["rot"].append(a["rotmats"][idx])
        out["transl"].append(a["transl"][idx])
        out["observed"].append(obs)
        out["confidence"].append(a["confidence"][idx] * obs)
        out["feature"].append(a["feature"][idx].astype(np.float32) * present[:, None])
        out["feature_present"].append(present)
        out["clean_rot"].append(a["gt_rotmats"][idx])
        out["clean_transl"].append(a["gt_transl"][idx])
        out["loss_mask"].append(valid)
        out["betas"].append(np.median(a["betas"][idx][obs], axis=0) if obs.any() else np.zeros(10, np.float32))
        out["gt_betas"].append(a["gt_betas"][idx][valid][0] if valid.any() else np.zeros(10, np.float32))
    return {
        k: torch.from_numpy(np.stack(v).astype(np.float32) if k in ("betas", "gt_betas") else np.stack(v))
        for k, v in out.items()
    }
