"""Commands with targets (``hmrflow train X``, ``hmrflow bench X``): one dispatch for all.

A target table is a plain dict ``name -> module``; each module exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Targets whose module is absent from
this installation are not offered.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Mapping


def available(targets: Mapping[str, str]) -> dict[str, str]:
    """The targets whose module can be imported here."""
    out = {}
    for name, module in targets.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = module
    return out


def add_target_parsers(parser: argparse.ArgumentParser, targets: Mapping[str, str]) -> None:
    """One sub-parser per available target, filled by the target module's add_arguments."""
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, module in available(targets).items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_target_module=module)


def run_target(args: argparse.Namespace) -> int:
    """Run the chosen target module."""
    return int(importlib.import_module(args._target_module).run(args) or 0)
