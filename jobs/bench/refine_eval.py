"""Refinement benchmark: per-frame estimates vs the refine stage on held-out synthetic tracks.

Run::

    hmrflow bench refine [--weights DIR] [--tracks 12] [--seconds 10] [--json OUT]

Each track is a motion of the procedural library from seeds the prior never saw in training
(``200_000 + i``), seen by a random camera, corrupted by the estimate noise model
(:mod:`hmrflow.priors.motion_diffusion.noise_model`: jitter, L/R flips, depth drift, dropped
frames and gaps up to 1 s).  Only observed frames are given to :class:`RefineStage`, which
fills the gaps.  Joints are the synthetic body model's 24 kinematic joints (betas 0).

Reported (mm unless noted; per-frame figures are over observed frames only, since the
per-frame estimator has nothing on the others):
``mpjpe`` / ``pa_mpjpe`` on observed frames, ``accel_error`` (mm/frame^2, consecutive
frames), ``jitter`` (m/s^3), ``mpjpe_filled`` (refined, on filled frames), ``fps``: refined
frames per second of the stage (prior, sampling and stitching; torch threads as given).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HELD_OUT_SEED = 200_000


def make_tracks(n_tracks: int, seconds: float, fps: float = 30.0, seed: int = HELD_OUT_SEED, noise=None) -> list[dict]:
    """Held-out synthetic tracks: dicts with clean ``gt_rot``/``gt_transl`` (camera frame, all
    frames) and the estimate ``rot``/``transl``/``observed``/``confidence``."""
    from hmrflow.priors.motion_diffusion.noise_model import NoiseConfig, apply_noise, random_camera, world_to_camera
    from hmrflow.priors.motion_diffusion.train import synthetic_motions

    noise = noise or NoiseConfig()
    out = []
    for i, (rot_w, tr_w) in enumerate(synthetic_motions(range(seed, seed + n_tracks), seconds, fps)):
        rng = np.random.default_rng([seed, i, 1])
        r, t = random_camera(rng, tr_w.mean(0))
        rot_c, tr_c = world_to_camera(rot_w, tr_w, r, t)
        est = apply_noise(rot_c, tr_c, rng, fps, noise)
        out.append(
            dict(
                gt_rot=rot_c,
                gt_transl=tr_c,
                rot=est.rotmats,
                transl=est.transl,
                observed=est.observed,
                confidence=est.confidence,
                fps=fps,
            )
        )
    return out


def _joints(bm, rot: np.ndarray, transl: np.ndarray, betas: np.ndarray | None = None) -> np.ndarray:
    """(T, 24, 3) float64 joints of the body model ``bm`` posed by rot (T, 24, 3, 3), transl (T, 3)
    and betas (T, 10) (None: the template shape)."""
    import torch

    with torch.no_grad():
        return (
            bm(
                torch.from_numpy(np.ascontiguousarray(rot, np.float32)),
                None if betas is None else torch.from_numpy(np.ascontiguousarray(betas, np.float32)),
                torch.from_numpy(np.ascontiguousarray(transl, np.float32)),
            )
            .joints.numpy()
            .astype(np.float64)
        )


def evaluate(tracks: list[dict], cfg, threads: int = 2) -> dict[str, Any]:
    """Run :class:`RefineStage` on ``tracks`` and score per-frame vs refined (see module docstring)."""
    import torch

    from hmrflow.pipeline.types import SMPLSequence
    from hmrflow.priors import metrics as M
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.refine.stage import RefineStage

    torch.set_num_threads(threads)
    bm = load_body_model("synthetic")
    stage = RefineStage(cfg)
    stage.setup()
    acc: dict[str, list] = {
        k: []
        for k in (
            "in_mpjpe",
            "in_pa",
            "in_accel",
            "in_jitter",
            "out_mpjpe",
            "out_pa",
            "out_accel",
            "out_jitter",
            "filled_mpjpe",
            "gt_jitter",
            "in_flip_mpjpe",
        )
    }
    n_frames, seconds = 0, 0.0
    n_filled = 0
    for k, tr in enumerate(tracks):
        fps = tr["fps"]
        obs = tr["observed"]
        fi = np.flatnonzero(obs).astype(np.int64)
        seq = SMPLSequence(
            video_id="bench",
            track_id=k,
            betas=np.zeros(10, np.float32),
            frame_idx=fi,
            pts=fi / fps,
            observed=np.ones(len(fi), bool),
            rotmats=tr["rot"][fi],
            transl=tr["transl"][fi],
            confidence=tr["confidence"][fi],
        )
        t0 = time.perf_counter()
        out = stage(seq)
        seconds += time.perf_counter() - t0
        n_frames += len(out)
        gt = _joints(bm, tr["gt_rot"], tr["gt_transl"])
        est = _joints(bm, tr["rot"][fi], tr["transl"][fi])
        ref = _joints(bm, out.rotmats, out.transl)
        g_in, g_out = gt[fi], gt[out.frame_idx]
        acc["in_mpjpe"].append(M.mpjpe(est, g_in))
        acc["in_pa"].append(M.pa_mpjpe(est, g_in))
        acc["in_accel"].append(M.accel_error(est, g_in, fi))
        acc["in_jitter"].append(M.jitter(est, fi, fps))
        o = out.observed
        per = M.mpjpe(ref, g_out)
        acc["out_mpjpe"].append(per[o])
        acc["out_pa"].append(M.pa_mpjpe(ref[o], g_out[o]))
        acc["out_accel"].append(M.accel_error(ref, g_out, out.frame_idx))
        acc["out_jitter"].append(M.jitter(ref, out.frame_idx, fps))
        acc["filled_mpjpe"].append(per[~o])
        acc["gt_jitter"].append(M.jitter(gt, None, fps))
        n_filled += int((~o).sum())
    mean = {k: float(np.mean(np.concatenate(v))) if sum(len(x) for x in v) else float("nan") for k, v in acc.items()}
    res = {
        "tracks": len(tracks),
        "frames": n_frames,
        "filled_frames": n_filled,
        "per_frame": {
            "mpjpe": mean["in_mpjpe"],
            "pa_mpjpe": mean["in_pa"],
            "accel_error": mean["in_accel"],
            "jitter": mean["in_jitter"],
        },
        "refined": {
            "mpjpe": mean["out_mpjpe"],
            "pa_mpjpe": mean["out_pa"],
            "accel_error": mean["out_accel"],
            "jitter": mean["out_jitter"],
            "mpjpe_filled": mean["filled_mpjpe"],
        },
        "gt_jitter": mean["gt_jitter"],
        "fps": n_frames / max(seconds, 1e-9),
        "threads": threads,
        "refine_config": cfg.model_dump(mode="json"),
        "units": {"mpjpe": "mm", "pa_mpjpe": "mm", "accel_error": "mm/frame^2", "jitter": "m/s^3", "fps": "frames/s"},
    }
    p, r = res["per_frame"], res["refined"]
    res["change"] = {
        "accel_error_reduction": 1.0 - r["accel_error"] / p["accel_error"],
        "mpjpe_improvement": 1.0 - r["mpjpe"] / p["mpjpe"],
        "filled_over_observed_mpjpe": r["mpjpe_filled"] / r["mpjpe"],
    }
    return res


def format_report(res: dict[str, Any]) -> str:
    """A small text table of :func:`evaluate`'s result."""
    p, r, c = res["per_frame"], res["refined"], res["change"]
    lines = [
        f"{res['tracks']} tracks, {res['frames']} frames ({res['filled_frames']} filled)",
        f"{'':12s} {'MPJPE':>8s} {'PA-MPJPE':>9s} {'accel':>8s} {'jitter':>8s} {'MPJPE filled':>13s}",
        f"{'per-frame':12s} {p['mpjpe']:8.1f} {p['pa_mpjpe']:9.1f} {p['accel_error']:8.2f} {p['jitter']:8.1f} {'-':>13s}",
        f"{'refined':12s} {r['mpjpe']:8.1f} {r['pa_mpjpe']:9.1f} {r['accel_error']:8.2f} {r['jitter']:8.1f} "
        f"{r['mpjpe_filled']:13.1f}",
        f"accel error -{100 * c['accel_error_reduction']:.0f}%, MPJPE -{100 * c['mpjpe_improvement']:.1f}%, "
        f"filled/observed MPJPE {c['filled_over_observed_mpjpe']:.2f}x, GT jitter {res['gt_jitter']:.1f} m/s^3",
        f"speed: {res['fps']:.0f} refined frames/s ({res['threads']} threads)",
    ]
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--weights", default=None, help="prior folder (default: the bundled one)")
    ap.add_argument("--tracks", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--sampler", choices=["ddim", "dpm"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the result here")


def run(a: argparse.Namespace) -> int:
    from hmrflow.pipeline.config import RefineConfig

    cfg = RefineConfig(weights=a.weights, device="cpu")
    if a.steps:
        cfg = replace_cfg(cfg, steps=a.steps)
    if a.sampler:
        cfg = replace_cfg(cfg, sampler=a.sampler)
    res = evaluate(make_tracks(a.tracks, a.seconds), cfg, a.threads)
    print(format_report(res))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


def replace_cfg(cfg, **changes):
    """A copy of a frozen pydantic config with ``changes`` (validated)."""
    return type(cfg).model_validate({**cfg.model_dump(), **changes})
