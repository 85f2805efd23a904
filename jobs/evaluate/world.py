"""World-frame and camera metrics: field of view, W-MPJPE, WA-MPJPE, root trajectory, walking speed, foot skating.

Protocols (those of WHAM and GVHMR, on each person's best-matched track):

* the matched frames of a person's best track are cut into consecutive runs, and runs into
  segments of :data:`SEGMENT` frames (a shorter last piece counts when it has at least
  :data:`MIN_SEGMENT` frames);
* **WA-MPJPE**: all joints of a segment aligned to the ground truth by one similarity
  transform; **W-MPJPE**: the similarity transform that aligns the segment's first two
  frames, applied to the whole segment; both mm;
* **RTE**: root (pelvis) trajectory after one rigid alignment of the segment, mean error as
  a percentage of the ground truth's path length in the segment;
* **walking speed**: mean horizontal root speed of a person over their segments (path
  length of the pelvis sampled every :data:`SPEED_STRIDE` frames, over time) for people whose true speed is at
  least :data:`WALKING_MPS`; the error is ``|pred - true| / true`` in percent.  Prediction
  and ground truth are both y up, so no alignment is needed;
* **foot skating**: the predicted feet's horizontal motion (mm/frame) in frames where the
  ground truth's foot is in contact with the ground (lower than :data:`CONTACT_HEIGHT_M`
  above the person's lowest foot height and slower than :data:`CONTACT_SPEED_MPS`);
* **field of view**: the manifest's vertical field of view against the true one;
  **gravity**: the angle between the manifest's up direction in the first frame's camera and
  the true one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.priors.metrics import similarity_transform

SEGMENT = 100
MIN_SEGMENT = 30
SPEED_STRIDE = 10
WALKING_MPS = 0.4
CONTACT_HEIGHT_M = 0.05
CONTACT_SPEED_MPS = 0.2
#: SMPL feet (toe-side foot joints).
FEET = (10, 11)
WORLD_METRICS = ("wa_mpjpe_mm", "w_mpjpe_mm", "rte_pct", "foot_skate_mm")


def segments(frames: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the segments of sorted frame numbers (see module docstring)."""
    if not len(frames):
        return []
    breaks = np.nonzero(np.diff(frames) != 1)[0] + 1
    out = []
    for run in np.split(np.arange(len(frames)), breaks):
        for a in range(0, len(run), SEGMENT):
            piece = run[a : a + SEGMENT]
            if len(piece) >= MIN_SEGMENT:
                out.append(piece)
    return out


def segment_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """WA-MPJPE, W-MPJPE (mm) and RTE (%) of one segment of joints (T, 24, 3), world frames."""
    s, R, t = similarity_transform(pred.reshape(-1, 3), gt.reshape(-1, 3))
    wa = np.linalg.norm(s * pred @ R.T + t - gt, axis=-1).mean() * 1000.0
    s2, R2, t2 = similarity_transform(pred[:2].reshape(-1, 3), gt[:2].reshape(-1, 3))
    w = np.linalg.norm(s2 * pred @ R2.T + t2 - gt, axis=-1).mean() * 1000.0
    root_p, root_g = pred[:, 0], gt[:, 0]
    _, R3, t3 = similarity_transform(root_p, root_g, scale=False)
    path = float(np.linalg.norm(np.diff(root_g, axis=0), axis=1).sum())
    rte = np.linalg.norm(root_p @ R3.T + t3 - root_g, axis=1).mean() / path * 100.0 if path > 0.2 else float("nan")
    return {"wa_mpjpe_mm": float(wa), "w_mpjpe_mm": float(w), "rte_pct": float(rte)}


def path_and_time(root: np.ndarray, fps: float) -> tuple[float, float]:
    """Horizontal path length (m) and its duration (s) of a root path (T, 3), y up, sampled every
    SPEED_STRIDE frames (so per-frame jitter does not count as walking)."""
    if len(root) <= SPEED_STRIDE:
        return 0.0, 0.0
    sub = root[::SPEED_STRIDE][:, [0, 2]]
    return float(np.linalg.norm(np.diff(sub, axis=0), axis=1).sum()), (len(sub) - 1) * SPEED_STRIDE / fps


def contact_mask(gt_joints: np.ndarray, fps: float) -> np.ndarray:
    """(T, 2) bool: frames where each true foot touches the ground (see module docstring)."""
    feet = gt_joints[:, list(FEET)]
    height = feet[..., 1] - feet[..., 1].min(axis=0, keepdims=True)
    speed = np.zeros(height.shape)
    if len(feet) > 1:
        v = np.linalg.norm(np.diff(feet[..., [0, 2]], axis=0), axis=-1) * fps
        speed[1:] = v
        speed[0] = v[0]
    return (height < CONTACT_HEIGHT_M) & (speed < CONTACT_SPEED_MPS)


def skate(pred_joints: np.ndarray, contact: np.ndarray) -> np.ndarray:
    """Horizontal motion (mm/frame) of predicted feet between consecutive contact frames."""
    feet = pred_joints[:, list(FEET)][..., [0, 2]]
    step = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * 1000.0  # (T-1, 2)
    both = contact[1:] & contact[:-1]
    return step[both]


def person_world(pred_joints: np.ndarray, gt_joints: np.ndarray, frames: np.ndarray, fps: float) -> dict[str, Any]:
    """World metrics of one person: pred_joints/gt_joints (T, 24, 3) on sorted matched ``frames``.

    Returns per-segment error lists, the skating samples and the two speeds.
    """
    out: dict[str, Any] = {k: [] for k in ("wa_mpjpe_mm", "w_mpjpe_mm", "rte_pct")}
    ok = np.isfinite(pred_joints).all(axis=(1, 2))
    pred_joints, gt_joints, frames = pred_joints[ok], gt_joints[ok], frames[ok]
    sk = []
    dist_t = dist_p = dur = 0.0
    for seg in segments(frames):
        for k, v in segment_errors(pred_joints[seg], gt_joints[seg]).items():
            out[k].append(v)
        sk.append(skate(pred_joints[seg], contact_mask(gt_joints[seg], fps)))
        d_t, t = path_and_time(gt_joints[seg, 0], fps)
        d_p, _ = path_and_time(pred_joints[seg, 0], fps)
        dist_t, dist_p, dur = dist_t + d_t, dist_p + d_p, dur + t
    out["foot_skate_mm"] = np.concatenate(sk) if sk else np.zeros(0)
    out["speed_true"] = dist_t / dur if dur > 0 else float("nan")
    out["speed_pred"] = dist_p / dur if dur > 0 else float("nan")
    return out


def manifest_camera(pred_dir: Path) -> dict[str, Any] | None:
    """The ``camera`` entry of a prediction folder's manifest (None when absent)."""
    try:
        return json.loads((pred_dir / "manifest.json").read_text(encoding="utf-8")).get("camera")
    except (OSError, ValueError):
        return None


def camera_errors(
    camera: dict[str, Any] | None, K: np.ndarray, height: int, cam_R0: np.ndarray | None
) -> dict[str, float]:
    """Field-of-view error (degrees) and gravity error (degrees) of a manifest camera entry."""
    out = {"fov_err_deg": float("nan"), "gravity_err_deg": float("nan")}
    if not camera:
        return out
    intr = camera.get("intrinsics") or {}
    fy = intr.get("fy") or camera.get("focal_px")
    h = intr.get("height") or camera.get("height")
    if fy and h:
        pred = math.degrees(2 * math.atan(0.5 * float(h) / float(fy)))
        true = math.degrees(2 * math.atan(0.5 * height / float(K[1, 1])))
        out["fov_err_deg"] = abs(pred - true)
    world = camera.get("world") or {}
    up = world.get("up_in_first_camera")
    if up is not None and cam_R0 is not None:
        true_up = cam_R0 @ np.array([0.0, 1.0, 0.0])
        u = np.asarray(up, np.float64)
        out["gravity_err_deg"] = math.degrees(math.acos(float(np.clip(u @ true_up / np.linalg.norm(u), -1, 1))))
    return out
