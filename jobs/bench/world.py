"""World coordinates on the synthetic sets: field of view, camera-frame depth, world trajectories.

    hmrflow bench world [--sets easy moving] [--clips N] [--seed S] [--work DIR]
                        [--variants diagonal estimated true] [--json PATH]

Every clip runs decode -> detect -> estimate -> track -> refine once; the world stage then
runs once per variant on the same refined tracks (it is the only stage that depends on
the camera), and each variant's outputs are written and scored by ``hmrflow eval``:

* ``diagonal``: the old behaviour, focal = image diagonal, no field-of-view estimate;
* ``estimated``: the field of view estimated from the frames (the default);
* ``true``: the clip's true intrinsics given as an intrinsics file (what a calibrated user does).

Camera motion, gravity and ground are estimated in every variant.  Prints one markdown
table and writes the rows as JSON; ``world_s`` is the time of the camera observer plus
the world stage, ``share`` its fraction of the pipeline's time.  All figures are synthetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from hmrflow.configs.bench import BENCH_SETS

log = logging.getLogger(__name__)

VARIANTS = ("diagonal", "estimated", "true")
COLUMNS = (
    "set",
    "variant",
    "clips",
    "fov_err_deg_median",
    "fov_err_deg",
    "cam_mpjpe_mm",
    "mpjpe_mm",
    "wa_mpjpe_mm",
    "w_mpjpe_mm",
    "rte_pct",
    "speed_err_pct",
    "foot_skate_mm",
    "gravity_err_deg_median",
    "share",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", nargs="+", choices=BENCH_SETS, default=["easy", "moving"])
    parser.add_argument("--clips", type=int, default=None, help="clips per set (default: the set's count)")
    parser.add_argument("--seed", type=int, default=None, help="base seed of fresh clips (default: the sets' own)")
    parser.add_argument("--work", default="hmrflow-bench", help="folder for rendered sets and outputs")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--preset", default="clip")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="write the rows here (default WORK/world_bench.json)")


def _variant_config(variant: str, base: list[str], intrinsics_file: Path) -> list[str]:
    if variant == "diagonal":
        return [*base, "camera.fov=diagonal"]
    if variant == "true":
        return [*base, f"camera.intrinsics={intrinsics_file}"]
    return list(base)


def run_set(set_dir: Path, out_root: Path, preset: str, overrides: list[str], variants: list[str]) -> dict[str, float]:
    """Run every clip of ``set_dir`` once and each world variant on its tracks; returns seconds
    per part (``pipeline``, ``world``) summed over clips."""
    import numpy as np

    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.results import VideoResult
    from hmrflow.pipeline.runner import result_extra, run_frame_part, run_video_part, run_world

    cfg = load_config(preset, overrides)
    spec = build_spec(cfg, out_root / "_unused")
    built = spec.build()
    for st in [*built.frame_part(), built.track, built.refine]:
        if st is not None and hasattr(st, "setup"):
            st.setup()
    seconds = {"pipeline": 0.0, "world": 0.0}
    for clip_dir in sorted(p for p in set_dir.iterdir() if (p / "gt.npz").is_file()):
        clip = spec.probe(str(clip_dir / f"{clip_dir.name}.mp4"), clip_dir.name)
        t0 = time.perf_counter()
        part = run_frame_part(built.decode, built.frame_stages, clip)
        timings = dict(part.timings_s)
        seqs = run_video_part(part.estimates, built.track, built.to_sequences, built.refine, timings)
        seconds["pipeline"] += time.perf_counter() - t0
        seconds["world"] += timings.get("CameraObserver", 0.0)
        with np.load(clip_dir / "gt.npz") as z:
            K = z["K"]
            intr = {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]) + 0.5, "cy": float(K[1, 2]) + 0.5}
            intr.update(width=int(z["width"]), height=int(z["height"]))
        intr_file = out_root / "_intrinsics" / f"{clip_dir.name}.json"
        intr_file.parent.mkdir(parents=True, exist_ok=True)
        intr_file.write_text(json.dumps(intr))
        for variant in variants:
            vcfg = load_config(preset, _variant_config(variant, overrides, intr_file))
            vspec = build_spec(vcfg, out_root / variant)
            vb = vspec.build()
            info = result_extra(part, {})
            t1 = time.perf_counter()
            out_seqs, camera, cameras = run_world(vb.world, seqs, info.pop("camera", None), clip, timings)
            if variant == "estimated":
                seconds["world"] += time.perf_counter() - t1
                seconds["pipeline"] += time.perf_counter() - t1
            if camera is not None:
                info["camera"] = camera
            vb.write(VideoResult(clip, out_seqs, vcfg.resolved_dict(), dict(timings), info, cameras=cameras))
    return seconds


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.bench.pipeline import markdown, render_set
    from hmrflow.jobs.evaluate import evaluate

    work = Path(args.work)
    rows: list[dict[str, Any]] = []
    for name in args.sets:
        set_dir = render_set(name, args.clips, work / "sets", seed=args.seed)
        out_root = work / "world" / set_dir.name
        seconds = run_set(set_dir, out_root, args.preset, args.overrides, args.variants)
        for variant in args.variants:
            over = evaluate(out_root / variant, set_dir).overall
            row = {"set": set_dir.name, "variant": variant, "clips": len(list((out_root / variant).iterdir()))}
            row["share"] = seconds["world"] / seconds["pipeline"] if seconds["pipeline"] else float("nan")
            row["world_s"] = seconds["world"]
            row["pipeline_s"] = seconds["pipeline"]
            row.update({k: v for k, v in over.items() if k not in row})
            rows.append(row)
            log.info("%s/%s: %s", name, variant, {k: row.get(k) for k in COLUMNS[3:]})
    path = Path(args.json) if args.json else work / "world_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=float))
    sys.stdout.write(markdown(rows, COLUMNS) + "\n")
    return 0
