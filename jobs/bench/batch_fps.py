"""End-to-end throughput of the LocalRunner vs the Ray runner, and worker memory vs clip length.

    hmrflow bench batch [--pipeline MODULE:FUNCTION] [--clips 8] [--frames 150]
        [--size 320x240] [--clips-from DIR] [--ray-cpus 2] [--rss-minutes 1 10] [--json FILE]

Writes ``--clips`` textured H.264 clips into a temporary folder, then times over the same
clips: (1) the LocalRunner in this process, (2) the local batch job (ledger + supervised
worker process), (3) the Ray runner (``ray.init`` timed separately; the Ray overhead is the
Ray wall time minus the in-process LocalRunner time).  ``--rss-minutes`` also processes one
clip of each length (30 fps) with the local batch job and reports the worker's peak RSS:
frames stream, so it should not grow with the clip length.
``--pipeline`` builds the stages (default: the installed model stages).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _clips(folder: Path, n: int, frames: int, size: tuple[int, int]) -> list[Path]:
    from hmrflow.jobs.bench.decode_fps import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"clip{i:02d}.mp4"
        write_clip(p, frames, size[0], size[1])
        paths.append(p)
    return paths


def _spec(pipeline: str | None, out: Path) -> Any:
    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config

    return build_spec(load_config("clip", ["decode.batch_size=16"]), out, pipeline)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from hmrflow.jobs.batch.inputs import enumerate_inputs
    from hmrflow.jobs.batch.run import BatchOptions, run_batch
    from hmrflow.jobs.pipelines import probe_clip
    from hmrflow.pipeline.assembly import VideoTask

    w, h = (int(x) for x in args.size.split("x"))
    res: dict[str, Any] = {
        "clips": args.clips,
        "frames_per_clip": args.frames,
        "size": args.size,
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.clips_from:  # existing clips, e.g. a rendered synthetic bench set
            inputs = enumerate_inputs(args.clips_from)[: args.clips]
            total = sum(max(probe_clip(v.path, v.video_id).n_frames, 0) for v in inputs)
            res.update(clips=len(inputs), frames_total=total, clips_from=str(args.clips_from))
        else:
            _clips(root / "in", args.clips, args.frames, (w, h))
            inputs = enumerate_inputs(root / "in")
            total = args.clips * args.frames

        runner = _spec(args.pipeline, root / "local").local_runner()
        runner.setup()
        t0 = time.perf_counter()
        for v in inputs:
            runner.run(probe_clip(v.path, v.video_id))
        res["local_runner_s"] = time.perf_counter() - t0
        res["local_runner_fps"] = total / res["local_runner_s"]

        t0 = time.perf_counter()
        s = run_batch(
            inputs, _spec(args.pipeline, root / "batch"), root / "batch", BatchOptions(progress=False, qc=False)
        )
        res["local_batch_s"] = time.perf_counter() - t0
        res["local_batch_fps"] = total / res["local_batch_s"]
        res["local_batch_done"] = s.done

        import ray

        from hmrflow.pipeline.runner_ray import RayRunner, ensure_ray

        t0 = time.perf_counter()
        ensure_ray(num_cpus=args.ray_cpus)
        res["ray_init_s"] = time.perf_counter() - t0
        tasks = [VideoTask(v.video_id, v.path) for v in inputs]
        for isolate in (False, True):
            key = "ray_isolated" if isolate else "ray"
            rr = RayRunner(_spec(args.pipeline, root / key), isolate=isolate, frame_workers=args.ray_workers)
            t0 = time.perf_counter()
            outcomes = list(rr.run(tasks))
            res[f"{key}_s"] = time.perf_counter() - t0
            res[f"{key}_fps"] = total / res[f"{key}_s"]
            res[f"{key}_done"] = sum(o.ok for o in outcomes)
            res[f"{key}_overhead_s"] = res[f"{key}_s"] - res["local_runner_s"]
        ray.shutdown()

        for minutes in args.rss_minutes:
            n = int(round(minutes * 60 * 30))
            folder = root / f"rss{minutes}"
            _clips(folder, 1, n, (args.rss_size_w, args.rss_size_h))
            t0 = time.perf_counter()
            out = root / f"rss_out{minutes}"
            s = run_batch(
                enumerate_inputs(folder), _spec(args.pipeline, out), out, BatchOptions(progress=False, qc=False)
            )
            from hmrflow.jobs.batch.ledger import Ledger
            from hmrflow.jobs.batch.run import ledger_path

            with Ledger(ledger_path(out)) as led:
                (e,) = led.entries()
            res[f"rss_{minutes}min"] = {
                "frames": e.frames,
                "status": e.status,
                "peak_rss_mb": round(e.peak_rss_mb, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
    return res


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default=None, help="module:function building the stages")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--clips-from", default=None, help="use the videos under this folder (e.g. a synthetic bench set)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--size", default="320x240")
    p.add_argument("--ray-cpus", type=int, default=2)
    p.add_argument(
        "--ray-workers", type=int, default=None, help="Ray frame workers (default: as many as the cluster holds)"
    )
    p.add_argument("--rss-minutes", type=float, nargs="*", default=[])
    p.add_argument("--rss-size-w", type=int, default=160)
    p.add_argument("--rss-size-h", type=int, default=120)
    p.add_argument("--json", default=None, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    res = bench(args)
    text = json.dumps(res, indent=2, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0
