"""Benchmarks: ``hmrflow bench TARGET [options]``.

Targets are a plain dict ``name -> module``; each module exposes ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when this command is set up.
"""

from __future__ import annotations

import argparse

from hmrflow.jobs.cli.targets import add_target_parsers, run_target

#: target -> module with add_arguments/run (targets whose module is absent are not offered).
TARGETS: dict[str, str] = {
    "estimator": "hmrflow.jobs.bench.estimator",
    "estimator-accuracy": "hmrflow.jobs.bench.estimator_eval",
    "heads": "hmrflow.jobs.bench.heads",
    "pipeline": "hmrflow.jobs.bench.pipeline",
    "track": "hmrflow.jobs.bench.track_eval",
    "refine": "hmrflow.jobs.bench.refine_eval",
    "refine-pairs": "hmrflow.jobs.bench.refine_pairs",
    "batch": "hmrflow.jobs.bench.batch_fps",
    "decode": "hmrflow.jobs.bench.decode_fps",
    "render": "hmrflow.jobs.bench.render",
    "world": "hmrflow.jobs.bench.world",
    "opensim": "hmrflow.jobs.bench.opensim",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_parsers(parser, TARGETS)


def run(args: argparse.Namespace) -> int:
    return run_target(args)
