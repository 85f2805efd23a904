"""Score hmrflow outputs (PRED_DIR/<video>/tracks.parquet) against synthetic ground truth (GT_DIR/<video>/gt.npz).

Prints a markdown table (one row per video and an overall row) or, with --json, the
full report; see ``hmrflow.jobs.evaluate.report`` for what every column means.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hmrflow eval``."""
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of hmrflow outputs (<video_id>/tracks.parquet)")
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of synthetic clips (<video_id>/gt.npz)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    parser.add_argument(
        "--out", metavar="FILE", help="also write the report to FILE (JSON if it ends in .json, else markdown)"
    )
    parser.add_argument(
        "--body-model",
        metavar="PATH",
        default=None,
        help="real SMPL model files for posing both sides (default: hmrflow's synthetic body model)",
    )
    parser.add_argument(
        "--visibility",
        type=float,
        default=0.3,
        help="people less visible than this fraction are don't-care in a frame (default 0.3)",
    )
    parser.add_argument("--iou", type=float, default=0.5, help="minimal projected-box IoU of a match (default 0.5)")
    parser.add_argument("--all-columns", action="store_true", help="show every column in the table")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print, optionally write; returns 0."""
    from hmrflow.jobs.evaluate import evaluate

    report = evaluate(
        args.pred_dir, args.gt_dir, body_model=args.body_model, visibility=args.visibility, iou_threshold=args.iou
    )
    text_md = report.to_markdown(columns=None) if args.all_columns else report.to_markdown()
    text = report.to_json() if args.json else text_md
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text((report.to_json() if out.suffix == ".json" else text_md) + "\n")
        log.info("report written to %s", out)
    return 0
