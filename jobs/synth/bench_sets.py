"""Named benchmark sets: ``configs/bench/<name>.yaml`` -> a list of :class:`SceneSpec`.

File format::

    name: easy                      # the set's name (clip names are <name>_<i:03d>)
    description: one line
    n_clips: 8
    seed: 1000                      # clip i uses seed + i
    spec: {seconds: 5, ...}         # SceneSpec fields shared by all clips
    choices:                        # per clip, one value drawn from each list (seeded)
      people: [1, 2]
      layout:                       # a key that is not a SceneSpec field: its options are
        - {people: 2, cross_pairs: 1}   # mappings of fields drawn together
        - {people: 5, groups: 1}

Unknown keys (in the file or in ``spec``/``choices``) are errors.

Fresh seeds: ``load_bench_set(name, seed=S)`` draws the same kind of clips from base seed
``S`` (clip i uses ``S + i``) and names them ``<name>_s<S>_<i:03d>`` so that clips of
different seeds never share a name (outputs and ground truth are matched by name);
:func:`set_dir_name` gives the matching folder name ``<name>_s<S>``.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hmrflow.configs.bench import BENCH_SETS
from hmrflow.jobs.synth.scene import SceneSpec
from hmrflow.pipeline.errors import ConfigError

__all__ = ["BENCH_SETS", "bench_set_path", "load_bench_set", "set_dir_name"]
_KEYS = {"name", "description", "n_clips", "seed", "spec", "choices"}
_FIELDS = {f.name for f in dataclasses.fields(SceneSpec)}


def bench_set_path(name: str) -> Path:
    """Path of the YAML of a named set (or ``name`` itself when it is a file)."""
    if Path(name).suffix in (".yaml", ".yml") and Path(name).is_file():
        return Path(name)
    path = resources.files("hmrflow.configs.bench").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"bench set {name!r}: no configs/bench/{name}.yaml (known: {', '.join(BENCH_SETS)})")
    return Path(str(path))


def set_dir_name(name: str, seed: int | None = None) -> str:
    """Folder name of a rendered set: ``name`` with the file's seed, ``<name>_s<seed>`` otherwise.

    ``name`` may be a YAML path (its stem is used).
    """
    stem = Path(name).stem if Path(name).suffix in (".yaml", ".yml") else name
    return stem if seed is None else f"{stem}_s{int(seed)}"


def _check_choices(path: Path, choices: dict[str, Any]) -> None:
    """Every choice is a non-empty list; a non-field key must list mappings (joint choices)."""
    for k, v in choices.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{path}: choices.{k} must be a non-empty list")
        if k not in _FIELDS and not all(isinstance(o, dict) for o in v):
            raise ConfigError(
                f"{path}: choices.{k} is not a SceneSpec field, so its options must be mappings of fields"
            )


def load_bench_set(name: str, n_clips: int | None = None, seed: int | None = None, **overrides: Any) -> list[SceneSpec]:
    """The clips of a named set.

    Args:
        name: a set of ``configs/bench/`` (see :data:`BENCH_SETS`) or a YAML file.
        n_clips: number of clips (default: the file's ``n_clips``).
        seed: base seed replacing the file's: clip i uses ``seed + i`` and is named
            ``<set>_s<seed>_<i:03d>``; None keeps the file's seed and the names ``<set>_<i:03d>``.
        overrides: SceneSpec fields replacing the file's for every clip.
    Returns:
        One :class:`SceneSpec` per clip.
    """
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
    _check_choices(path, choices)
    n = int(n_clips if n_clips is not None else doc.get("n_clips", 1))
    if n < 0:
        raise ConfigError(f"bench set {set_name!r}: number of clips must be >= 0, got {n}")
    base_seed = int(doc.get("seed", 0)) if seed is None else int(seed)
    prefix = set_name if seed is None else f"{set_name}_s{base_seed}"
    rng = np.random.default_rng(base_seed)
    specs = []
    for i in range(n):
        d = dict(base)
        for k, options in sorted(choices.items()):
            pick = options[int(rng.integers(len(options)))]
            if k in _FIELDS:
                d[k] = pick
            else:
                d.update(pick)
        d.update(overrides)
        d["name"] = f"{prefix}_{i:03d}"
        d["seed"] = base_seed + i
        try:
            specs.append(SceneSpec.from_dict(d))
        except TypeError as exc:
            raise ConfigError(f"{path}: bad spec: {exc}") from exc
    return specs
