"""Named benchmark sets: ``configs/bench/<name>.yaml`` -> a list of :class:`SceneSpec`.

File format::

    name: easy                      # the set's name (clip names are <name>_<i:03d>)
    description: one line
    n_clips: 8
    seed: 1000                      # clip i uses seed + i
    spec: {seconds: 5, ...}         # SceneSpec fields shared by all clips
    choices: {people: [1, 2]}       # per clip, one value drawn from each list (seeded)

Unknown keys (in the file or in ``spec``/``choices``) are errors.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hmrflow.jobs.synth.scene import SceneSpec
from hmrflow.pipeline.errors import ConfigError

BENCH_SETS = ("easy", "crowded", "occlusion", "far")
_KEYS = {"name", "description", "n_clips", "seed", "spec", "choices"}


def bench_set_path(name: str) -> Path:
    """Path of the YAML of a named set (or ``name`` itself when it is a file)."""
    if Path(name).suffix in (".yaml", ".yml") and Path(name).is_file():
        return Path(name)
    path = resources.files("hmrflow.configs.bench").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"bench set {name!r}: no configs/bench/{name}.yaml (known: {', '.join(BENCH_SETS)})")
    return Path(str(path))


def load_bench_set(name: str, n_clips: int | None = None, **overrides) -> list[SceneSpec]:
    """The clips of a named set (``n_clips`` and SceneSpec ``overrides`` replace the file's)."""
    path = bench_set_path(name)
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping")
    unknown = set(doc) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    set_name = str(doc.get("name", path.stem))
    base = dict(doc.get("spec") or {})
    choices = dict(doc.get("choices") or {})
    for k, v in choices.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{path}: choices.{k} must be a non-empty list")
    n = int(n_clips if n_clips is not None else doc.get("n_clips", 1))
    seed = int(doc.get("seed", 0))
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(n):
        d = dict(base)
        for k, options in sorted(choices.items()):
            d[k] = options[int(rng.integers(len(options)))]
        d.update(overrides)
        d["name"] = f"{set_name}_{i:03d}"
        d["seed"] = seed + i
        try:
            specs.append(SceneSpec.from_dict(d))
        except TypeError as exc:
            raise ConfigError(f"{path}: bad spec: {exc}") from exc
    return specs
