"""The ``hmrflow`` command.

Each subcommand lives in its own module ``hmrflow.jobs.cli.<name>`` exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only lists them in one
plain dict and turns errors into one-line messages (no traceback walls for users).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Sequence

from hmrflow.pipeline.errors import HmrflowError
from hmrflow.pipeline.logs import setup_logging

log = logging.getLogger("hmrflow")

#: subcommand -> (module, one-line help).  Modules import heavy packages lazily in run().
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("hmrflow.jobs.cli.run", "run the pipeline on one video"),
    "demo": ("hmrflow.jobs.cli.demo", "render a synthetic clip, run the pipeline on it, score it"),
    "probe": ("hmrflow.jobs.cli.probe", "print container/codec/rotation/fps facts of videos"),
    "body-model": ("hmrflow.jobs.cli.body_model", "make or check body model files"),
    "synth": ("hmrflow.jobs.cli.synth", "render synthetic clips with ground truth"),
    "eval": ("hmrflow.jobs.cli.eval", "score hmrflow outputs against ground truth"),
    "train": ("hmrflow.jobs.cli.train", "train a model (detector, estimator, prior) on the synthetic world"),
    "batch": ("hmrflow.jobs.cli.batch", "run the pipeline over many videos (resumable ledger, QC report)"),
    "job": ("hmrflow.jobs.cli.job", "scheduled runs from a job spec (cron-safe lock, idempotent)"),
    "render": ("hmrflow.jobs.cli.render", "overlay video of the tracked meshes/skeletons over a clip"),
    "report": ("hmrflow.jobs.cli.report", "self-contained HTML/PNG QC report per video"),
    "export": (
        "hmrflow.jobs.cli.export",
        "export to .trc/.mot, .csv, BVH, C3D, or the OpenSim path (scaled model + OpenSim IK)",
    ),
    "accelerate": ("hmrflow.jobs.cli.accelerate", "merge estimator layers within an error budget (ECLM)"),
    "bench": (
        "hmrflow.jobs.cli.bench",
        "benchmarks: estimator, estimator-accuracy, pipeline, track, refine, refine-pairs, world, opensim, "
        "batch, decode, render",
    ),
}


def _available_commands() -> dict[str, tuple[str, str]]:
    """Commands whose module exists in this installation."""
    return {name: v for name, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    """Parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="hmrflow", description="Video to identity-tracked SMPL sequences.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in _available_commands().items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hmrflow`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    setup_logging(-1 if args.quiet else args.verbose)
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except HmrflowError as exc:
        print(f"hmrflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hmrflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: one line, the traceback only on request
        if args.verbose:
            log.exception("internal error")
        print(
            f"hmrflow {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)",
            file=sys.stderr,
        )
        return 1
