"""Options several commands share, declared once so they mean the same everywhere."""

from __future__ import annotations

import argparse


def add_preset_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """``--preset NAME|FILE.yaml`` and repeatable ``--set key=value`` (into ``args.overrides``)."""
    parser.add_argument(
        "--preset",
        default=default_preset,
        help=f"preset name (clip, archive, clinical, real) or a YAML file (default: {default_preset})",
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


def add_window_arguments(parser: argparse.ArgumentParser, per_video: str = "") -> None:
    """``--start``/``--end``: the time window decoded (``decode.start``/``decode.end``).

    per_video: appended to the help (batch: where a manifest's columns take precedence).
    """
    forms = "seconds (12.5 or 12.5s) or a frame number (300f)"
    parser.add_argument(
        "--start",
        default=None,
        metavar="T",
        help=f"skip the video before T: {forms}; outputs keep the video's own frame numbers and times{per_video}",
    )
    parser.add_argument(
        "--end",
        default=None,
        metavar="T",
        help=f"stop before T (frames with t < T), same forms as --start; decode.max_frames counts from --start{per_video}",
    )


def window_overrides(args: argparse.Namespace) -> list[str]:
    """``decode.start=...``/``decode.end=...`` overrides from ``--start``/``--end`` (checked here).

    Raises :class:`~hmrflow.pipeline.errors.ConfigError` (one line, the flag named) for bad
    values and for ``--end`` not after ``--start``.
    """
    from hmrflow.pipeline.window import Window

    window = Window.parse(getattr(args, "start", None), getattr(args, "end", None), what="--")
    return [f"decode.{side}={value}" for side, value in window.record().items() if value is not None]
