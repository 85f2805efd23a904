"""Benchmarks: ``hmrflow bench TARGET [options]``.

Targets are a plain dict ``name -> module``; each module exposes ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when this command is set up.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

#: target -> module with add_arguments/run (targets whose module is absent are not offered).
TARGETS: dict[str, str] = {
    "estimator": "hmrflow.jobs.bench.estimator",
    "pipeline": "hmrflow.jobs.bench.pipeline",
    "render": "hmrflow.jobs.bench.render",
}


def _available() -> dict[str, str]:
    out = {}
    for name, module in TARGETS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = module
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, module in _available().items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_bench_module=module)


def run(args: argparse.Namespace) -> int:
    mod = importlib.import_module(args._bench_module)
    return int(mod.run(args) or 0)
