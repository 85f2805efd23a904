"""Render synthetic clips with exact ground truth (or a shard of single-person training crops).

    hmrflow synth OUT [--people N --seconds S --fps F --size WxH --seed K --camera static|pan|dolly]
    hmrflow synth OUT --bench easy|crowded|occlusion|far|crossings|twins|moving [--clips N] [--seed S]
    hmrflow synth OUT --crops N [--crop-size HxW --seed K]

Clips go to ``OUT/<clip>/`` (``<clip>.mp4``, ``gt.npz``, ``scene.json``, docs/FORMATS.md);
a bench set to ``OUT/<set>/`` (``OUT/<set>_s<S>/`` with ``--seed S``: fresh clips named
``<set>_s<S>_<i>``, clip i seeded ``S + i``, so sets of different seeds never mix);
crops to ``OUT/crops_<seed>.npz``.
"""

from __future__ import annotations

import argparse
import logging

from hmrflow.configs.bench import BENCH_SETS
from hmrflow.pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (a set of clips, or where the crop shard goes)")
    parser.add_argument("--bench", choices=BENCH_SETS, help="render a named benchmark set")
    parser.add_argument("--clips", type=int, default=None, help="with --bench: number of clips (default: the set's)")
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH of clips (even numbers)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default 0); with --bench the base seed of fresh clips (clip i gets S + i; "
        "written to OUT/<set>_s<S>/), default the set's own",
    )
    parser.add_argument("--camera", choices=("static", "pan", "dolly"), default="static")
    parser.add_argument("--occluders", type=int, default=0, help="pillars that fully hide walkers for a while")
    parser.add_argument("--name", default=None, help="clip name (default synth_<seed>)")
    parser.add_argument("--crops", type=int, default=None, metavar="N", help="write N training crops instead of a clip")
    parser.add_argument("--crop-size", type=_size, default=(256, 192), help="HxW of crops")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from hmrflow.jobs.synth.clip import load_body_assets, render_clip
    from hmrflow.jobs.synth.scene import SceneSpec

    out = Path(args.out)
    seed = 0 if args.seed is None else args.seed
    if args.bench and args.crops is not None:
        raise ConfigError("--bench and --crops exclude each other")
    out.mkdir(parents=True, exist_ok=True)
    body = load_body_assets()
    if args.crops is not None:
        from hmrflow.jobs.synth.crops import render_crops
        from hmrflow.pipeline.atomic import atomic_path

        if args.crops <= 0:
            raise ConfigError(f"--crops must be > 0, got {args.crops}")
        data = render_crops(np.random.default_rng(seed), args.crops, size=tuple(args.crop_size), body=body)
        path = out / f"crops_{seed}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **data, body_model_sha256=np.array(body.sha256))  # type: ignore[arg-type]
        log.info("wrote %d crops to %s", args.crops, path)
        return 0
    if args.bench:
        from hmrflow.jobs.synth.bench_sets import load_bench_set, set_dir_name

        specs = load_bench_set(args.bench, n_clips=args.clips, seed=args.seed)
        folder = set_dir_name(args.bench, args.seed)
        out = out / folder if out.name != folder else out
    else:
        w, h = args.size
        specs = [
            SceneSpec(
                name=args.name or f"synth_{seed}",
                seed=seed,
                people=args.people,
                seconds=args.seconds,
                fps=args.fps,
                width=w,
                height=h,
                camera=args.camera,
                occluders=args.occluders,
                walkers=0.5 if not args.occluders else 0.75,
            )
        ]
    for spec in specs:
        d = render_clip(spec, out, body=body)
        log.info("rendered %s", d)
    return 0
