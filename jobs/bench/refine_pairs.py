"""Refinement on the pipeline's own tracks: per-frame vs refined, per clip, from pairs files.

    hmrflow bench refine-pairs PAIRS_DIR [--weights DIR] [--set KEY=VALUE ...] [--json OUT]

``PAIRS_DIR`` holds the files of ``hmrflow train prior-pairs`` made on rendered clips the prior
was not trained on: every track of the pipeline (detect -> estimate -> track, no refinement)
with its image features and the ground truth of the person its boxes cover.  Each track's
observed frames go through :class:`~hmrflow.stages.refine.stage.RefineStage` exactly as in a
run (gap filling, windows, features, shape); then both the per-frame rows and the refined rows
are posed with the synthetic body model (each with its own betas) and compared with the ground
truth's joints: MPJPE (pelvis-aligned), PA-MPJPE on observed frames, MPJPE on filled frames,
acceleration error, and the angle between the camera rays to the predicted and the true
pelvis (how far from the person's pixels the body is drawn).
Only rows whose ground truth is known count.  This isolates refinement
from detection and tracking (and runs in seconds); ``hmrflow bench pipeline`` gives the
end-to-end figures with ``hmrflow eval``'s matching.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _ray_mrad(joints: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(T,) angle (milliradians) between the camera rays to the predicted and the true pelvis:
    how far the body is drawn from where the person is in the image."""
    a = joints[:, 0] / np.linalg.norm(joints[:, 0], axis=-1, keepdims=True)
    b = gt[:, 0] / np.linalg.norm(gt[:, 0], axis=-1, keepdims=True)
    return 1000.0 * np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0))


def evaluate_pairs(
    pair_dir: str | Path, cfg: Any, seed: int = 0, feature_source: str | None = None, threads: int = 2
) -> dict[str, Any]:
    """Score refinement on every pairs file of ``pair_dir`` (see the module doc).

    Returns ``{"clips": [per-clip rows], "sets": {set: summary}, "fps": refined frames/s}``;
    a set is the clip name without its ``_NNN`` clip number (and a ``_tag`` after it).
    """
    import torch

    from hmrflow.jobs.bench.refine_eval import _joints
    from hmrflow.pipeline.types import SMPLSequence
    from hmrflow.priors import metrics as M
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.refine.stage import RefineStage
    from hmrflow.stages.track.sequences import weighted_median

    torch.set_num_threads(threads)
    bm = load_body_model("synthetic")
    stage = RefineStage(cfg, seed=seed, feature_source=feature_source)
    stage.setup()
    rows, seconds, n_out = [], 0.0, 0
    for f in sorted(Path(pair_dir).glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        acc: dict[str, list[np.ndarray]] = defaultdict(list)
        for k in np.unique(a["track_id"]):
            sel = np.flatnonzero(a["track_id"] == k)
            obs = a["observed"][sel]
            o = sel[obs]
            if len(o) < 2:
                continue
            betas = weighted_median(a["betas"][o], a["confidence"][o]).astype(np.float32)
            seq = SMPLSequence(
                video_id=f.stem,
                track_id=int(k),
                betas=betas,
                frame_idx=a["frame_idx"][o],
                pts=a["frame_idx"][o] / 30.0,
                observed=np.ones(len(o), bool),
                rotmats=a["rotmats"][o],
                transl=a["transl"][o],
                confidence=a["confidence"][o],
                feature=a["feature"][o],
            )
            t0 = time.perf_counter()
            out = stage(seq)
            seconds += time.perf_counter() - t0
            n_out += len(out)
            # ground truth of the refined rows (the pairs hold the track's whole frame span)
            pos = np.searchsorted(a["frame_idx"][sel], out.frame_idx)
            g = sel[pos]
            valid = a["gt_valid"][g]
            gt = _joints(bm, a["gt_rotmats"][g], a["gt_transl"][g], a["gt_betas"][g])
            ref = _joints(bm, out.rotmats, out.transl, np.broadcast_to(out.betas, (len(out), 10)))
            est = _joints(bm, a["rotmats"][o], a["transl"][o], np.broadcast_to(betas, (len(o), 10)))
            gv = a["gt_valid"][o]
            gto = gt[np.searchsorted(out.frame_idx, a["frame_idx"][o])]
            acc["in_mpjpe"].append(M.mpjpe(est[gv], gto[gv]))
            acc["in_pa"].append(M.pa_mpjpe(est[gv], gto[gv]))
            acc["in_accel"].append(M.accel_error(est[gv], gto[gv], a["frame_idx"][o][gv]))
            ob = out.observed & valid
            fl = ~out.observed & valid
            acc["in_ray"].append(_ray_mrad(est[gv], gto[gv]))
            acc["out_ray"].append(_ray_mrad(ref[ob], gt[ob]))
            acc["out_mpjpe"].append(M.mpjpe(ref[ob], gt[ob]))
            acc["out_pa"].append(M.pa_mpjpe(ref[ob], gt[ob]))
            acc["out_accel"].append(M.accel_error(ref[valid], gt[valid], out.frame_idx[valid]))
            acc["filled_mpjpe"].append(M.mpjpe(ref[fl], gt[fl]))
        if not acc:
            continue
        mean = {k: float(np.mean(np.concatenate(v))) if sum(map(len, v)) else float("nan") for k, v in acc.items()}
        mean["frames"] = int(sum(map(len, acc["in_mpjpe"])))
        mean["filled"] = int(sum(map(len, acc["filled_mpjpe"])))
        mean["clip"] = f.stem
        mean["set"] = re.sub(r"_\d{3}(_[A-Za-z0-9]+)?$", "", f.stem)  # <set>_<NNN>[_<tag>] -> <set>
        rows.append(mean)
    sets: dict[str, Any] = {}
    for name in sorted({r["set"] for r in rows}):
        rs = [r for r in rows if r["set"] == name]
        w = np.array([r["frames"] for r in rs], np.float64)
        wf = np.array([r["filled"] for r in rs], np.float64)

        def wmean(key: str, wt: np.ndarray = w, rs: list = rs) -> float:
            v = np.array([r[key] for r in rs])
            ok = np.isfinite(v) & (wt > 0)
            return float((v[ok] * wt[ok]).sum() / wt[ok].sum()) if ok.any() else float("nan")

        s = {
            k: wmean(k)
            for k in ("in_mpjpe", "in_pa", "in_accel", "in_ray", "out_mpjpe", "out_pa", "out_accel", "out_ray")
        }
        s["filled_mpjpe"] = wmean("filled_mpjpe", wf)
        s["clips"] = len(rs)
        s["frames"] = int(w.sum())
        s["filled"] = int(wf.sum())
        s["mpjpe_ratio"] = s["out_mpjpe"] / s["in_mpjpe"]
        s["pa_ratio"] = s["out_pa"] / s["in_pa"]
        s["accel_reduction"] = 1.0 - s["out_accel"] / s["in_accel"]
        s["filled_over_observed"] = s["filled_mpjpe"] / s["out_mpjpe"]
        s["clips_worse_mpjpe"] = int(sum(r["out_mpjpe"] > r["in_mpjpe"] for r in rs))
        s["clips_worse_pa"] = int(sum(r["out_pa"] > r["in_pa"] for r in rs))
        sets[name] = s
    return {"clips": rows, "sets": sets, "fps": n_out / max(seconds, 1e-9), "threads": threads}


def format_sets(res: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_pairs`' per-set summary."""
    head = (
        "| set | clips | frames | MPJPE per-frame | refined | ratio | PA-MPJPE per-frame | refined | ratio | "
        "clips worse (MPJPE/PA) | accel change | filled frames | filled MPJPE | filled/observed | "
        "pelvis ray error mrad per-frame / refined |"
    )
    lines = [head, "|" + "---|" * 15]
    for name, s in res["sets"].items():
        lines.append(
            f"| {name} | {s['clips']} | {s['frames']} | {s['in_mpjpe']:.1f} | {s['out_mpjpe']:.1f} | "
            f"{s['mpjpe_ratio']:.3f} | {s['in_pa']:.1f} | {s['out_pa']:.1f} | {s['pa_ratio']:.3f} | "
            f"{s['clips_worse_mpjpe']}/{s['clips_worse_pa']} | {-100 * s['accel_reduction']:+.0f}% | {s['filled']} | "
            f"{s['filled_mpjpe']:.1f} | {s['filled_over_observed']:.2f} | {s['in_ray']:.1f} / {s['out_ray']:.1f} |"
        )
    lines.append(f"\nrefine stage: {res['fps']:.0f} refined frames/s on {res['threads']} threads")
    return "\n".join(lines)


def format_merged(plain: dict[str, Any], merged: dict[str, Any]) -> str:
    """Markdown table: the merged estimator refined vs the unmerged estimator per frame, per set."""
    lines = [
        "| set | unmerged per-frame MPJPE | merged refined MPJPE | ratio | unmerged per-frame PA-MPJPE | "
        "merged refined PA-MPJPE | ratio |",
        "|" + "---|" * 7,
    ]
    for name, p in plain["sets"].items():
        m = merged["sets"].get(name)
        if m is None:
            continue
        lines.append(
            f"| {name} | {p['in_mpjpe']:.1f} | {m['out_mpjpe']:.1f} | {m['out_mpjpe'] / p['in_mpjpe']:.3f} | "
            f"{p['in_pa']:.1f} | {m['out_pa']:.1f} | {m['out_pa'] / p['in_pa']:.3f} |"
        )
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("pairs", help="folder of pairs files (hmrflow train prior-pairs) on held-out clips")
    ap.add_argument("--weights", default=None, help="prior folder (default: the bundled one)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="refine.* settings, e.g. --set steps=2",
    )
    ap.add_argument(
        "--estimator",
        default="auto",
        help="id of the estimator the pairs were made with (auto: the bundled tiny one; "
        "'eclm' for the bundled merged one)",
    )
    ap.add_argument(
        "--merged",
        default=None,
        help="pairs of the same clips made with the layer- and token-merged estimator: also prints its "
        "refined error beside the unmerged estimator's per-frame error",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)


def run(a: argparse.Namespace) -> int:
    import yaml

    from hmrflow.pipeline.config import EstimateConfig, RefineConfig
    from hmrflow.stages.mesh.stage import estimator_feature_id

    changes: dict[str, Any] = {"weights": a.weights, "device": "cpu"}
    for kv in a.overrides:
        k, _, v = kv.partition("=")
        changes[k.removeprefix("refine.")] = yaml.safe_load(v)
    cfg = RefineConfig.model_validate(changes)
    source = {"auto": estimator_feature_id(EstimateConfig()), "eclm": estimator_feature_id(EstimateConfig(eclm=True))}
    res = evaluate_pairs(a.pairs, cfg, feature_source=source.get(a.estimator, a.estimator), threads=a.threads)
    print(format_sets(res))
    if a.merged:
        merged = evaluate_pairs(
            a.merged, cfg, feature_source=estimator_feature_id(EstimateConfig(eclm=True)), threads=a.threads
        )
        print("\nmerged estimator (ECLM + Mask-ToMe):\n" + format_sets(merged))
        print("\n" + format_merged(res, merged))
        res["merged"] = merged
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0
