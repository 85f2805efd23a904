"""Export outputs to biomechanics/animation formats: OpenSim .trc/.mot, .csv, BVH, C3D, and the
OpenSim path (a scaled model and OpenSim inverse kinematics per track).

Writes one file per track, ``<dest>/<video_id>_track<id>.<format>`` (default dest:
``OUT_DIR/<video_id>/exports``).  Units, axes and timestamps: docs/exports.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hmrflow.jobs.cli.options import add_body_model_arguments

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="OUT_DIR (every video in it) or OUT_DIR/<video_id>")
    p.add_argument(
        "--format",
        "-f",
        dest="fmt",
        required=True,
        choices=["trc", "mot", "csv", "bvh", "c3d", "opensim"],
        help="trc: joint markers (mm, Y-up); mot/csv: joint angles (deg); bvh: SMPL skeleton; c3d: markers; "
        "opensim: virtual skin markers, a scaled OpenSim model and OpenSim inverse kinematics (docs/opensim.md)",
    )
    p.add_argument("--dest", default=None, help="folder for the files (default OUT_DIR/<video_id>/exports)")
    p.add_argument(
        "--markers",
        default="joints",
        choices=["joints", "joints+surface"],
        help="trc/c3d: 24 SMPL joints, or also 21 surface markers on the mesh",
    )
    p.add_argument("--units", default="mm", choices=["mm", "m"], help="trc units")
    p.add_argument(
        "--frame",
        default="world",
        choices=["world", "camera"],
        help="world: the video's gravity-aligned frame (y up, shared by all tracks); camera: the camera frame turned upright",
    )
    p.add_argument(
        "--opensim-model",
        default="scaled",
        choices=["scaled", "shape"],
        help="opensim: scaled = the generic model scaled by OpenSim's ScaleTool (the lab workflow); "
        "shape = a model built from each track's own body shape (exact joint centres, no ScaleTool)",
    )
    add_body_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.export import export_video, find_video_outputs

    if args.fmt == "opensim":
        from hmrflow.jobs.export import opensim

        if not opensim.opensim_available():
            raise opensim.OpenSimUnavailableError(
                "--format opensim needs the opensim package: pip install opensim (CPython 3.11+ wheels on PyPI)"
            )
    videos = find_video_outputs(args.out_dir)
    body_model = None
    if args.fmt in ("trc", "bvh", "c3d", "opensim"):
        if args.fmt == "c3d":
            from hmrflow.jobs.export.c3d import MissingDependencyError, ezc3d_available

            if not ezc3d_available():
                raise MissingDependencyError("--format c3d needs ezc3d: pip install ezc3d")
        from hmrflow.priors.body_model import load_body_model

        body_model = load_body_model("smpl" if args.body_model else "synthetic", args.body_model, args.gender)
    total = 0
    for v in videos:
        dest = Path(args.dest) / v.name if args.dest and len(videos) > 1 else args.dest
        files = export_video(
            v,
            args.fmt,
            dest,
            body_model,
            markers=args.markers,
            units=args.units,
            frame=args.frame,
            opensim_model=args.opensim_model,
        )
        for f in files:
            print(f)
        total += len(files)
    log.info("wrote %d file(s)", total)
    return 0
