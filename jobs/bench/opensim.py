"""The OpenSim path against ground truth on rendered walking (the ``gait`` set).

    hmrflow bench opensim [--clips N] [--seed S] [--work DIR] [--json PATH]

Per clip: ``hmrflow run`` (preset ``clip``), then the OpenSim path (ScaleTool + inverse
kinematics) on the clip's longest track, and, for reference, the same path on the clip's
ground-truth body.  Sagittal hip, knee and ankle angles are compared with the ground truth's
SMPL joint angles (:mod:`hmrflow.jobs.export.angles`) over the track's frames:

* ``path``: OpenSim path on the ground-truth body (the error the path itself adds: virtual
  markers on a skinned mesh, a scaled model with hinge knees and ankles, inverse kinematics);
* ``path-shape``: the same with ``--opensim-model shape`` (model built from the body's shape);
* ``opensim``: OpenSim path on the estimated track (end to end);
* ``smpl``: the estimated track's own SMPL angles (``--format mot``), the same frames.

Prints a markdown table of RMSE in degrees (mean over left and right) and writes JSON.
All figures are synthetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (OpenSim coordinate, hmrflow SMPL angle) per side, sagittal.
PAIRS: tuple[tuple[str, str], ...] = (
    ("hip_flexion_{s}", "hip_flexion_{s}"),
    ("knee_angle_{s}", "knee_flexion_{s}"),
    ("ankle_angle_{s}", "ankle_dorsiflexion_{s}"),
)
COLUMNS = ("clip", "variant", "frames", "coverage", "hip_rmse_deg", "knee_rmse_deg", "ankle_rmse_deg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=None, help="clips (default: the gait set's count)")
    parser.add_argument("--seed", type=int, default=None, help="base seed of fresh clips (default: the set's own)")
    parser.add_argument("--work", default="hmrflow-bench", help="folder for rendered clips and outputs")
    parser.add_argument("--preset", default="clip")
    parser.add_argument("--json", default=None, help="write the rows here (default WORK/opensim_bench.json)")


def sagittal_rmse(ik: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """RMSE (deg) of hip, knee and ankle, averaged over both sides; ``ik`` columns are OpenSim
    coordinates or hmrflow angle names (either naming), ``truth`` hmrflow angles, same rows."""
    out: dict[str, float] = {}
    for osim_name, smpl_name in PAIRS:
        vals = []
        for s in "lr":
            key = osim_name.format(s=s) if osim_name.format(s=s) in ik else smpl_name.format(s=s)
            err = np.asarray(ik[key], np.float64) - np.asarray(truth[smpl_name.format(s=s)], np.float64)
            vals.append(float(np.sqrt(np.mean(err**2))))
        out[f"{osim_name.split('_')[0]}_rmse_deg"] = float(np.mean(vals))
    return out


def ground_truth_track(clip_dir: Path, person: int = 0) -> Any:
    """The ground-truth body of ``person`` as a :class:`~hmrflow.jobs.export.reading.TrackData`
    with its world frame (every frame of the clip)."""
    from hmrflow.jobs.export.reading import TrackData

    with np.load(clip_dir / "gt.npz") as z:
        poses = np.asarray(z["poses"][:, person], np.float32)
        n = len(poses)
        return TrackData(
            track_id=1000 + person,
            frame_idx=np.arange(n),
            pts=np.asarray(z["pts"], np.float64),
            poses=poses,
            transl=np.asarray(z["transl"][:, person], np.float32),
            betas=np.asarray(z["betas"][person], np.float32),
            observed=np.ones(n, bool),
            confidence=np.ones(n, np.float32),
            world_orient=np.asarray(z["world_poses"][:, person, :3], np.float32),
            world_transl=np.asarray(z["world_transl"][:, person], np.float32),
        )


def evaluate_clip(clip_dir: Path, out_root: Path, preset: str, body_model: Any) -> list[dict[str, Any]]:
    """Run one clip end to end and the OpenSim path on it and on its ground truth."""
    from hmrflow.jobs.export.angles import poses_to_angles
    from hmrflow.jobs.export.opensim import export_opensim
    from hmrflow.jobs.export.opensim.run import read_storage
    from hmrflow.jobs.export.reading import load_video_output
    from hmrflow.jobs.pipelines import run_one
    from hmrflow.pipeline.config import load_config

    out = run_one(clip_dir / f"{clip_dir.name}.mp4", out_root, load_config(preset, []), progress=False)
    video = load_video_output(out)
    gt = ground_truth_track(clip_dir)
    truth = poses_to_angles(gt.poses)
    rows: list[dict[str, Any]] = []
    if not video.tracks:
        return [{"clip": clip_dir.name, "variant": "opensim", "frames": 0, "coverage": 0.0}]
    track = max(video.tracks, key=len)
    fi = np.asarray(track.frame_idx)
    est_dir = out / "exports"
    export_opensim(track, video.video_id, est_dir, body_model)
    ik = read_storage(est_dir / f"{video.video_id}_track{track.track_id}_opensim" / "ik.mot")
    t_gt = {k: v[fi] for k, v in truth.items()}
    base = {"clip": clip_dir.name, "frames": int(len(fi)), "coverage": float(len(fi) / len(gt))}
    for kind, variant in (("scaled", "path"), ("shape", "path-shape")):
        export_opensim(gt, f"{video.video_id}_gt_{kind}", est_dir, body_model, model=kind)
        ik_gt = read_storage(est_dir / f"{video.video_id}_gt_{kind}_track{gt.track_id}_opensim" / "ik.mot")
        rows.append({**base, "variant": variant, **sagittal_rmse({k: v[fi] for k, v in ik_gt.items()}, t_gt)})
    rows.append({**base, "variant": "opensim", **sagittal_rmse(ik, t_gt)})
    rows.append({**base, "variant": "smpl", **sagittal_rmse(poses_to_angles(track.poses), t_gt)})
    return rows


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.bench.pipeline import markdown, render_set
    from hmrflow.jobs.export.opensim import OpenSimUnavailableError, opensim_available
    from hmrflow.priors.body_model import load_body_model

    if not opensim_available():
        raise OpenSimUnavailableError("hmrflow bench opensim needs the opensim package: pip install opensim")
    work = Path(args.work)
    set_dir = render_set("gait", args.clips, work / "sets", seed=args.seed)
    body_model = load_body_model("synthetic")
    rows: list[dict[str, Any]] = []
    for clip_dir in sorted(p for p in set_dir.iterdir() if (p / "gt.npz").is_file()):
        rows += evaluate_clip(clip_dir, work / "opensim" / set_dir.name, args.preset, body_model)
        log.info("%s: %s", clip_dir.name, rows[-4:])
    for variant in ("path", "path-shape", "opensim", "smpl"):
        sel = [r for r in rows if r.get("variant") == variant and "knee_rmse_deg" in r]
        if sel:
            mean = {c: float(np.mean([r[c] for r in sel])) for c in COLUMNS[3:]}
            rows.append(
                {
                    "clip": f"mean ({len(sel)} clips)",
                    "variant": variant,
                    "frames": sum(r["frames"] for r in sel),
                    **mean,
                }
            )
    path = Path(args.json) if args.json else work / "opensim_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=float))
    sys.stdout.write(markdown(rows, COLUMNS) + "\n")
    return 0
