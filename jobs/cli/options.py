"""Options several commands share, declared once so they mean the same everywhere."""

from __future__ import annotations

import argparse


def add_preset_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """``--preset NAME|FILE.yaml`` and repeatable ``--set key=value`` (into ``args.overrides``)."""
    parser.add_argument(
        "--preset",
        default=default_preset,
        help=f"preset name (clip, archive, clinical) or a YAML file (default: {default_preset})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set decode.max_side=720 (repeatable)",
    )


def add_body_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--body-model PATH`` (real SMPL files; default the bundled synthetic body) and ``--gender``."""
    parser.add_argument(
        "--body-model",
        default=None,
        metavar="PATH",
        help="real SMPL files (folder or .pkl); default the bundled synthetic body",
    )
    parser.add_argument("--gender", default="neutral", choices=["neutral", "male", "female"])
