"""Train hmrflow's models: ``hmrflow train detector|estimator|prior|prior-pairs|fov [options]``.

Targets are a plain dict ``name -> "module:function"``; each target module exposes
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when listed targets
exist in this installation.
"""

from __future__ import annotations

import argparse

from hmrflow.jobs.cli.targets import add_target_parsers, run_target

#: target -> module with add_arguments/run (targets whose module is absent are not offered).
TARGETS: dict[str, str] = {
    "detector": "hmrflow.jobs.train.detector",
    "estimator": "hmrflow.jobs.train.estimator",
    "prior": "hmrflow.jobs.train.prior",
    "prior-pairs": "hmrflow.jobs.train.prior_pairs",
    "fov": "hmrflow.jobs.train.fov",
    "onestage": "hmrflow.jobs.train.onestage",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_parsers(parser, TARGETS)


def run(args: argparse.Namespace) -> int:
    return run_target(args)
