"""Render an overlay video: tracked meshes (or skeletons) over the clip, coloured per track.

``hmrflow render OUT_DIR/<video_id> --video CLIP.mp4 [-o overlay.mp4] [--skeleton]
[--view camera|side-by-side|top|map]``.  Runs headless on CPU (torch rasteriser, PyAV).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hmrflow.jobs.cli.options import add_body_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video_dir", help="one output folder OUT_DIR/<video_id>")
    p.add_argument("--video", default=None, help="the input clip (default: the path recorded in manifest.json)")
    p.add_argument("-o", "--output", default=None, help="mp4 to write (default OUT_DIR/<video_id>/overlay.mp4)")
    p.add_argument("--skeleton", action="store_true", help="draw skeletons instead of meshes")
    p.add_argument(
        "--view",
        default="camera",
        choices=["camera", "side-by-side", "top", "map"],
        help="add a side or top view panel to the right of the overlay (map: ground paths in the world frame)",
    )
    p.add_argument(
        "--focal",
        type=float,
        default=None,
        help="focal length in pixels (default: the camera recorded in manifest.json, else HMR2's 5000/256*max(W,H))",
    )
    p.add_argument("--alpha", type=float, default=0.75, help="mesh opacity")
    p.add_argument("--no-labels", action="store_true", help="do not write track ids")
    add_body_model_arguments(p)
    p.add_argument("--device", default="cpu", help="torch device for posing and rasterising (auto, cpu, cuda, cuda:N)")


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.export.reading import OutputReadError, is_video_output, load_video_output
    from hmrflow.jobs.report.overlay import OverlayOptions, render_overlay
    from hmrflow.priors.body_model import load_body_model

    vdir = Path(args.video_dir)
    if not is_video_output(vdir):
        raise OutputReadError(f"{vdir}: not an output folder OUT_DIR/<video_id> (no tracks.parquet/manifest.json)")
    clip = args.video or load_video_output(vdir).input_path
    if not clip or not Path(clip).is_file():
        raise OutputReadError(f"{vdir}: give the clip with --video (manifest input {clip!r} not found)")
    from hmrflow.pipeline.devices import resolve_device

    device = str(resolve_device(args.device, "--device"))
    bm = load_body_model("smpl" if args.body_model else "synthetic", args.body_model, args.gender, device=device)
    opts = OverlayOptions(
        mode="skeleton" if args.skeleton else "mesh",
        view=args.view,
        focal=args.focal,
        alpha=args.alpha,
        labels=not args.no_labels,
        device=device,
    )
    out = render_overlay(vdir, clip, args.output or vdir / "overlay.mp4", bm, opts)
    print(out)
    return 0
