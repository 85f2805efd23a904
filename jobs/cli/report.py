"""Write a self-contained HTML (and PNG) QC report per video of an output folder.

For each ``OUT_DIR/<video_id>/``: ``report.html`` (track timeline, per-track quality in plain
words, gait figures when a person walks, joint-angle plots with gaps left open, thumbnails;
inline SVG, opens offline in any browser) and ``report.png``.  The written paths are the
command's output on stdout (one per line, for scripts); progress and warnings go to the log.
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
        "--dest", default=None, help="write the reports here (<dest>/<video_id>/) instead of beside the outputs"
    )
    add_body_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hmrflow.jobs.export.reading import find_video_outputs
    from hmrflow.jobs.report.html import build_report
    from hmrflow.priors.body_model import load_body_model

    videos = find_video_outputs(args.out_dir)
    bm = load_body_model("smpl" if args.body_model else "synthetic", args.body_model, args.gender)
    for v in tqdm(videos, desc="reports", unit="video", disable=len(videos) < 2):
        dest = Path(args.dest) / v.name if args.dest else None
        html, png = build_report(v, bm, dest)
        print(html)
        print(png)
    return 0
