"""Renderer throughput: training crops per second and seconds per synthetic clip.

    hmrflow bench render [--crops 512] [--clip-seconds 10 --people 3 --size 640x480] [--json PATH]

Prints a small markdown table and one JSON line (wall and process CPU times; the CPU time is
the fairer figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crops", type=int, default=512, help="number of crops to time (0 = skip)")
    parser.add_argument("--crop-size", type=_size, default=(256, 192), help="HxW")
    parser.add_argument("--batch", type=int, default=64, help="crops per rasteriser call")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="clip length to time (0 = skip)")
    parser.add_argument("--people", type=int, default=3)
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH of the clip")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--camera", default="static", choices=("static", "pan", "dolly"))
    parser.add_argument("--json", default=None, help="also write the JSON result here")


def measure(args: argparse.Namespace) -> dict:
    """Run the timings; returns a JSON-friendly dict."""
    import numpy as np
    import torch

    from hmrflow.jobs.synth.clip import load_body_assets, render_clip
    from hmrflow.jobs.synth.crops import PosePool, render_crops
    from hmrflow.jobs.synth.scene import SceneSpec

    res: dict = {"torch_threads": torch.get_num_threads()}
    body = load_body_assets()
    if args.crops > 0:
        rng = np.random.default_rng(0)
        pool = PosePool(rng)
        render_crops(rng, min(16, args.crops), size=tuple(args.crop_size), body=body, pose_pool=pool)  # warm-up
        w0, c0 = time.perf_counter(), time.process_time()
        render_crops(rng, args.crops, size=tuple(args.crop_size), body=body, pose_pool=pool, batch=args.batch)
        w, c = time.perf_counter() - w0, time.process_time() - c0
        res["crops"] = {
            "n": args.crops,
            "size_hw": list(args.crop_size),
            "wall_s": w,
            "cpu_s": c,
            "crops_per_s_wall": args.crops / w,
            "crops_per_cpu_s": args.crops / c,
        }
    if args.clip_seconds > 0:
        W, H = args.size
        spec = SceneSpec(
            name="bench_render",
            seed=1,
            people=args.people,
            seconds=args.clip_seconds,
            fps=args.fps,
            width=W,
            height=H,
            camera=args.camera,
        )
        with tempfile.TemporaryDirectory() as tmp:
            w0, c0 = time.perf_counter(), time.process_time()
            render_clip(spec, tmp, body=body, progress=False)
            w, c = time.perf_counter() - w0, time.process_time() - c0
        res["clip"] = {
            "seconds": args.clip_seconds,
            "fps": args.fps,
            "people": args.people,
            "size_wh": [W, H],
            "camera": args.camera,
            "wall_s": w,
            "cpu_s": c,
            "frames_per_s_wall": spec.n_frames / w,
        }
    return res


def run(args: argparse.Namespace) -> int:
    res = measure(args)
    rows = ["| what | n | wall s | CPU s | rate |", "|---|---|---|---|---|"]
    if "crops" in res:
        r = res["crops"]
        rows.append(
            f"| crops {r['size_hw'][0]}x{r['size_hw'][1]} | {r['n']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['crops_per_s_wall']:.1f} crops/s |"
        )
    if "clip" in res:
        r = res["clip"]
        rows.append(
            f"| clip {r['size_wh'][0]}x{r['size_wh'][1]}, {r['people']} people, {r['seconds']:g} s @ {r['fps']:g} fps "
            f"({r['camera']}) | 1 | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['frames_per_s_wall']:.1f} frames/s |"
        )
    print("\n".join(rows))
    print(json.dumps(res))
    if args.json:
        from hmrflow.pipeline.atomic import atomic_write_json

        atomic_write_json(args.json, res)
    return 0
