"""End-to-end accuracy and speed of the whole pipeline on the synthetic benchmark sets.

    hmrflow bench pipeline [--sets easy crowded occlusion far crossings twins] [--clips N]
                           [--seed S] [--size WxH] [--work DIR] [--variants per-frame refined onestage ...]
                           [--preset clip] [--set KEY=VALUE ...] [--json PATH]

For every set (rendered once into ``WORK/sets/<set>/``, reused when present; with
``--seed S`` fresh clips of the same kind, clip i seeded ``S + i``, in
``WORK/sets/<set>_s<S>/`` with outputs in ``WORK/outputs/<set>_s<S>/``; with ``--size WxH``
the clips are rendered at that frame size, the same scenes scaled, in folders ending
``_<W>x<H>``) and every variant, the LocalRunner runs detect -> estimate -> track (-> refine) -> write on each clip
and ``hmrflow eval`` scores the outputs against the exact ground truth.  ``per-frame`` is the
pipeline with refinement switched off (the estimator's own per-frame output, tracked),
``refined`` the full pipeline.  Prints one markdown table (one row per set and variant) and
writes the same rows as JSON (every overall column of ``hmrflow eval``, plus set, seed,
variant, clips, frames, fps).  All figures are synthetic: label them so.

The ``onestage*`` variants run SAT-HMR's one-stage path (``detect.kind=onestage``) on the
same clips: ``onestage`` per frame and ``onestage-refined``, and the token ablations
``onestage-all-low`` (every token at low resolution), ``onestage-all-high`` (every token at
high resolution) and ``onestage-no-background`` (background tokens discarded instead of
pooled).  Their rows add a third table: tokens and high-resolution tokens per frame, GFLOPs
per frame (:func:`~hmrflow.stages.mesh.accel.flops.onestage_flops`) and both as shares of the
all-high-resolution ablation.  Compare ``onestage`` with ``per-frame`` (the two-stage path
without refinement) and its background pooling with ``per-frame-merged`` (the two-stage path
with ECLM and Mask-ToMe, which merges background tokens inside each crop).

Speed: ``fps`` is frames decoded per second of pipeline wall time (weights loaded before the
clock starts, so start-up is not in it; evaluation is not in it).  The ``*_pct`` columns
split the stage seconds each clip's manifest records (``volatile.timings_s``, summed over the
clips) into shares: decode, detect, estimate, track (with turning estimates into sequences),
refine, camera (field of view and camera motion, the world stage) and write (the rest of the
clip's wall time: writing outputs and overheads).  Decoding runs beside the other stages
(a reader thread), so its share can overlap the others' time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hmrflow.configs.bench import BENCH_SETS

log = logging.getLogger(__name__)

SETS = BENCH_SETS
#: The one-stage path's settings (those of ``configs/onestage.yaml``) on top of any preset.
ONESTAGE = ["detect.kind=onestage", "detect.score_threshold=0.55", "detect.nms_iou=0.5", "detect.batch_size=8"]
VARIANTS: dict[str, list[str]] = {
    "per-frame": ["refine.enabled=false"],
    "refined": ["refine.enabled=true"],
    # the two-stage path's own token reduction (ECLM + Mask-ToMe: background merged inside each
    # crop), beside the one-stage path's background pooling
    "per-frame-merged": [
        "refine.enabled=false",
        "estimate.eclm=true",
        "estimate.tome_r=[14,7,4]",
        "estimate.tome_group_size=0",
    ],
    # SAT-HMR's one-stage path beside the two-stage one, and its token ablations (per frame)
    "onestage": [*ONESTAGE, "refine.enabled=false"],
    "onestage-refined": [*ONESTAGE, "refine.enabled=true"],
    "onestage-all-low": [*ONESTAGE, "detect.onestage_tokens=all_low", "refine.enabled=false"],
    "onestage-all-high": [*ONESTAGE, "detect.onestage_tokens=all_high", "refine.enabled=false"],
    "onestage-no-background": [*ONESTAGE, "detect.onestage_tokens=discard_background", "refine.enabled=false"],
}
DEFAULT_VARIANTS = ("per-frame", "refined")
#: Stage-time shares reported by the bench: column -> the ``timings_s`` names summed into it.
STAGE_SHARES: dict[str, tuple[str, ...]] = {
    "decode_pct": ("DecodeStage",),
    "detect_pct": ("DetectStage",),
    "estimate_pct": ("EstimateStage",),
    "onestage_pct": ("OneStageStage", "OneStageEstimates"),
    "track_pct": ("TrackStage", "to_sequences"),
    "refine_pct": ("RefineStage",),
    "camera_pct": ("CameraObserver", "WorldStage"),
}


COLUMNS = (
    "set",
    "seed",
    "variant",
    "clips",
    "frames",
    "f1",
    "idf1",
    "mota",
    "id_switches",
    "fragments_per_person",
    "fragmented_people",
    "duplicate_frac",
    "recall_overlap",
    "mpjpe_mm",
    "pa_mpjpe_mm",
    "accel_mm_f2",
    "jitter_m_s3",
    "mpjpe_mm_filled",
    "fps",
)
#: The speed table: frames/s and where the time goes.
SPEED_COLUMNS = ("set", "size", "variant", "frames", "fps", *STAGE_SHARES, "write_pct")
#: The one-stage token table: per-frame means of the main encoder's tokens, of those at high
#: resolution, and FLOPs, with the FLOPs and tokens as shares of the all-high-resolution ablation
#: of the same set (when it ran).
TOKEN_COLUMNS = ("set", "variant", "tokens", "high_tokens", "gflops", "tokens_vs_all_high", "flops_vs_all_high")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sets", nargs="+", choices=SETS, default=["easy", "crowded", "occlusion"])
    parser.add_argument("--clips", type=int, default=None, help="clips per set (default: the set's count)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed of fresh clips (clip i gets S + i; sets go to WORK/sets/<set>_s<S>/); default the sets' own",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="render the clips at this frame size (e.g. 1920x1080; default the set's own, 640x480)",
    )
    parser.add_argument("--work", default="hmrflow-bench", help="folder for rendered sets and outputs")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=list(DEFAULT_VARIANTS),
        help="per-frame and refined: the preset's path; onestage*: the SAT-HMR one-stage path and its token ablations",
    )
    parser.add_argument("--preset", default="clip")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="write the rows here (default WORK/pipeline_bench.json)")


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> (1920, 1080); an argparse error for anything else."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"size {text!r}: width 16-7680 and height 16-4320 pixels")
    return w, h


def render_set(
    name: str, n_clips: int | None, root: Path, seed: int | None = None, size: tuple[int, int] | None = None
) -> Path:
    """Render bench set ``name`` into ``root/<name>/`` (``root/<name>_s<seed>/`` with a base
    seed, ``..._<W>x<H>`` at another frame ``size``) and return that folder; clips already
    there are kept."""
    from hmrflow.jobs.synth.bench_sets import load_bench_set, set_dir_name
    from hmrflow.jobs.synth.clip import load_body_assets, render_clip

    out = root / (set_dir_name(name, seed) + (f"_{size[0]}x{size[1]}" if size else ""))
    body = None
    sized = {"width": size[0], "height": size[1]} if size else {}
    for spec in load_bench_set(name, n_clips=n_clips, seed=seed, **sized):
        if (out / spec.name / "gt.npz").is_file() and (out / spec.name / f"{spec.name}.mp4").is_file():
            continue
        body = body or load_body_assets()
        render_clip(spec, out, body=body)
    return out


def stage_shares(timings: dict[str, float]) -> dict[str, float]:
    """Summed ``timings_s`` -> percentage per :data:`STAGE_SHARES` column and ``write_pct``
    (what ``total`` holds beyond the stages), all of the stage sum plus that rest."""
    parts = {col: sum(float(timings.get(k, 0.0)) for k in names) for col, names in STAGE_SHARES.items()}
    rest = max(0.0, float(timings.get("total", 0.0)) - sum(parts.values()))
    parts["write_pct"] = rest
    whole = sum(parts.values())
    return {col: (100.0 * v / whole if whole > 0 else float("nan")) for col, v in parts.items()}


def run_variant(
    set_dir: Path,
    out_dir: Path,
    preset: str,
    overrides: list[str],
    timings: dict[str, float] | None = None,
    stats: dict[str, float] | None = None,
) -> tuple[float, int]:
    """Run the pipeline over every clip of ``set_dir``; returns (seconds, frames decoded) and
    adds every clip's stage seconds (manifest ``volatile.timings_s``) into ``timings``, and the
    running totals of frame stages that keep them (the one-stage stage's tokens and FLOPs) into
    ``stats``."""
    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config

    cfg = load_config(preset, overrides)
    spec = build_spec(cfg, out_dir)
    runner = spec.local_runner(progress=False)
    runner.setup()  # weights loaded once, outside the timing
    clips = sorted(p for p in set_dir.iterdir() if (p / "gt.npz").is_file())
    t0, frames = time.perf_counter(), 0
    for clip_dir in clips:
        clip = spec.probe(str(clip_dir / f"{clip_dir.name}.mp4"), clip_dir.name)
        out = runner.run(clip, extra={"seeds": {"pipeline": cfg.seed}})
        man = json.loads((out / "manifest.json").read_text())
        frames += int(man["counts"]["frames_decoded"])
        if timings is not None:
            for k, v in (man.get("volatile", {}).get("timings_s") or {}).items():
                timings[k] = timings.get(k, 0.0) + float(v)
    seconds = time.perf_counter() - t0
    if stats is not None:
        for st in runner.frame_stages:
            for k, v in (getattr(st, "stats", None) or {}).items():
                stats[k] = stats.get(k, 0.0) + float(v)
    return seconds, frames


def token_columns(stats: dict[str, float]) -> dict[str, float]:
    """Per-frame means of a one-stage run's totals (empty for runs without them)."""
    n = float(stats.get("frames", 0.0))
    if n <= 0:
        return {}
    return {"tokens": stats["tokens"] / n, "high_tokens": stats["high_tokens"] / n, "gflops": stats["flops"] / n / 1e9}


def add_all_high_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill ``tokens_vs_all_high`` and ``flops_vs_all_high`` of each one-stage row from the
    ``onestage-all-high`` row of the same set and seed, where there is one."""
    ref = {(r["set"], r["seed"]): r for r in rows if r["variant"] == "onestage-all-high" and "gflops" in r}
    for r in rows:
        a = ref.get((r["set"], r["seed"]))
        if a is not None and "gflops" in r:
            r["tokens_vs_all_high"] = r["tokens"] / a["tokens"]
            r["flops_vs_all_high"] = r["gflops"] / a["gflops"]


def frame_size(set_dir: Path) -> str:
    """``"WxH"`` of a rendered set's clips (from the first clip's scene.json; ``"?"`` without one)."""
    for scene in sorted(set_dir.glob("*/scene.json")):
        spec = json.loads(scene.read_text()).get("spec") or {}
        return f"{spec.get('width')}x{spec.get('height')}"
    return "?"


def set_seed(name: str, seed: int | None) -> int:
    """The base seed a set's clips use: ``seed``, or the one in the set's YAML."""
    if seed is not None:
        return int(seed)
    import yaml

    from hmrflow.jobs.synth.bench_sets import bench_set_path

    return int((yaml.safe_load(bench_set_path(name).read_text()) or {}).get("seed", 0))


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.evaluate import evaluate

    work = Path(args.work)
    rows: list[dict[str, Any]] = []
    for name in args.sets:
        set_dir = render_set(name, args.clips, work / "sets", seed=args.seed, size=args.size)
        for variant in args.variants:
            # outputs live beside their set's folder name so different seeds never mix
            out_dir = work / "outputs" / set_dir.name / variant
            timings: dict[str, float] = {}
            stats: dict[str, float] = {}
            seconds, frames = run_variant(
                set_dir, out_dir, args.preset, [*VARIANTS[variant], *args.overrides], timings, stats
            )
            over = evaluate(out_dir, set_dir).overall
            row = {
                "set": name,
                "seed": set_seed(name, args.seed),
                "size": frame_size(set_dir),
                "variant": variant,
                "clips": len(list(out_dir.iterdir())),
                "frames": frames,
                "fps": frames / seconds if seconds > 0 else float("nan"),
                **stage_shares(timings),
                **token_columns(stats),
            }
            row.update({k: v for k, v in over.items() if k not in row})
            rows.append(row)
            log.info("%s/%s: %s", name, variant, {k: row.get(k) for k in ("f1", "idf1", "pa_mpjpe_mm")})
    add_all_high_ratios(rows)
    path = Path(args.json) if args.json else work / "pipeline_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, default=float))
    tables = [markdown(rows), markdown(rows, SPEED_COLUMNS)]
    if any("gflops" in r for r in rows):
        tables.append(markdown([r for r in rows if "gflops" in r], TOKEN_COLUMNS))
    sys.stdout.write("\n\n".join(tables) + "\n")
    return 0


def markdown(rows: list[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """One markdown table of ``columns``, numbers with 3 significant decimals."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, float("nan"))) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
