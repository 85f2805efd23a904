"""Head comparison: ``hmrflow bench heads``, also the head rows of ``hmrflow bench estimator``.

The SMPL head against FastMETRO (or any estimators).

Every named estimator (``NAME=PATH``; ``bundled`` = the bundled tiny SMPL-head and FastMETRO
estimators) is evaluated on the same fresh held-out crops (rendered like the training crops
from ``seed``, which no training or validation uses) and timed side by side, interleaved
round-robin, median of the repetitions.  Figures per model:

* of its SMPL parameters (what the pipeline consumes): PA-MPJPE, MPJPE, PVE;
* of a mesh head's own output: PA-MPJPE and MPJPE of the joints regressed from its mesh, and
  PVE of its mesh (the FastMETRO paper's figures);
* of a mesh head's SMPL readout after ``--heads-fit-steps`` vertex-fit steps
  (``estimate.mesh_fit_steps``): PA-MPJPE, MPJPE, PVE;
* crops/s per batch size (the FastMETRO head without the full-mesh upsampling, as the
  estimate stage runs it unless vertices are kept), analytic FLOPs, and both as ratios to the
  first model.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Held-out crops of the head comparison (training uses seed 0, validation 900001).
HEADS_SEED = 910001


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out/heads", help="output folder (default bench_out/heads)")
    p.add_argument(
        "--heads",
        default="bundled",
        help="comma-separated NAME=PATH estimators, or 'bundled' (the bundled SMPL-head and FastMETRO tiny estimators)",
    )
    p.add_argument("--batches", default="1,64", help="batch sizes timed side by side (default 1,64)")
    p.add_argument("--n-eval", type=int, default=1024, help="held-out crops (default 1024)")
    p.add_argument("--seed", type=int, default=HEADS_SEED, help=f"seed of the held-out crops (default {HEADS_SEED})")
    p.add_argument("--fit-steps", type=int, default=10, help="vertex-fit steps of the mesh heads' extra figures")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--precision", default="fp32", choices=["bf16", "fp32"], help="autocast dtype (default fp32)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(args: argparse.Namespace) -> int:
    """Write OUT/heads_bench.json and OUT/heads_bench.md and print the table."""
    import json

    from hmrflow.pipeline.atomic import atomic_write_bytes
    from hmrflow.pipeline.devices import resolve_device
    from hmrflow.pipeline.errors import ConfigError

    entries = parse_heads(args.heads)
    if not entries:
        raise ConfigError("--heads: no estimators to compare (no bundled weights found?)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = head_rows(
        entries,
        args.n_eval,
        args.seed,
        [int(b) for b in args.batches.split(",") if b.strip()],
        args.reps,
        resolve_device(args.device, "--device"),
        args.precision == "bf16",
        args.fit_steps,
    )
    atomic_write_bytes(out / "heads_bench.json", json.dumps(section, indent=2).encode())
    md = "\n".join(heads_markdown(section))
    atomic_write_bytes(out / "heads_bench.md", md.encode())
    print(md)
    return 0


def parse_heads(text: str) -> list[tuple[str, Path]]:
    """``smpl=a.safetensors,fastmetro=b.safetensors`` or ``bundled`` -> [(name, path)]."""
    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.stages.mesh.checkpoint import bundled_weights_path

    out: list[tuple[str, Path]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item == "bundled":
            for head in ("smpl", "fastmetro"):
                p = bundled_weights_path("tiny", head=head)
                if p.is_file():
                    out.append((f"{head} (bundled)", p))
            continue
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--heads: expected NAME=PATH or 'bundled', got {item!r}")
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"--heads: {p}: no such weights file")
        out.append((name, p))
    return out


def head_rows(
    entries: list[tuple[str, Path]],
    n_eval: int,
    seed: int,
    batches: list[int],
    reps: int,
    device: Any,
    amp: bool,
    fit_steps: int = 10,
) -> dict[str, Any]:
    """Accuracy, FLOPs and side-by-side throughput of each (name, weights) estimator; a mesh
    head also gets the figures of its SMPL readout after ``fit_steps`` vertex-fit steps."""
    import numpy as np
    import torch

    from hmrflow.jobs.train.estimator_data import render_crops
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.mesh.accel.flops import model_flops
    from hmrflow.stages.mesh.checkpoint import load_estimator
    from hmrflow.stages.mesh.crop import normalise_uint8
    from hmrflow.stages.mesh.fastmetro import FastMETROHead
    from hmrflow.stages.mesh.train import evaluate_crops

    models = []
    for name, path in entries:
        m, _ = load_estimator(path, device=device)
        models.append((name, path, m))
    sizes = {m.image_size for _, _, m in models}
    if len(sizes) != 1:
        from hmrflow.pipeline.errors import ConfigError

        raise ConfigError(f"--heads: the estimators take different crop sizes {sorted(sizes)}")
    hw = sizes.pop()
    body = load_body_model("synthetic", device=device)
    data = render_crops(np.random.default_rng([seed, 0]), n_eval, hw)
    precision = "bf16" if amp else "fp32"
    rows: list[dict[str, Any]] = []
    for name, path, m in models:
        if isinstance(m.head, FastMETROHead):
            m.head.full_mesh = True  # the mesh's PVE needs it; timing below runs without
        res = evaluate_crops(m, data, body, batch_size=64, device=device, precision=precision)
        fl = model_flops(m)
        rows.append(
            {
                "name": name,
                "weights": str(path),
                "head": m.spec.head_kind,
                "attention_mask": getattr(m.spec.head, "attention_mask", None),
                "pa_mpjpe_mm": res["pa_mpjpe_mm"],
                "mpjpe_mm": res["mpjpe_mm"],
                "pve_mm": res["pve_mm"],
                **{k: res[k] for k in ("mesh_pa_mpjpe_mm", "mesh_mpjpe_mm", "mesh_pve_mm") if k in res},
                "gflops_per_crop": fl.total / 1e9,
                "head_gflops_per_crop": fl.head / 1e9,
                "params_head_m": sum(p.numel() for p in m.head.parameters()) / 1e6,
            }
        )
        log.info("heads: %s PA-MPJPE %.1f mm, PVE %.1f mm", name, res["pa_mpjpe_mm"], res["pve_mm"])
        if isinstance(m.head, FastMETROHead):
            if fit_steps:
                rows[-1].update(_fitted(m, data, body, fit_steps, device))
            m.head.full_mesh = False
    images = normalise_uint8(torch.from_numpy(np.ascontiguousarray(data.images)))
    timing: list[dict[str, Any]] = []
    for b in batches:
        x = images[torch.arange(b) % images.shape[0]].to(device)
        secs: dict[str, list[float]] = {name: [] for name, _, _ in models}
        with torch.inference_mode():
            for _, _, m in models:  # warm-up
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    m(x)
            for _ in range(reps):
                for name, _, m in models:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        m(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    secs[name].append(time.perf_counter() - t0)
        base = statistics.median(secs[models[0][0]])
        for name, _, _ in models:
            s = statistics.median(secs[name])
            timing.append({"name": name, "batch": b, "crops_per_s": b / s, "time_ratio": s / base})
    first = rows[0]
    for r in rows:
        r["flops_ratio"] = r["gflops_per_crop"] / first["gflops_per_crop"]
        r["head_flops_ratio"] = r["head_gflops_per_crop"] / first["head_gflops_per_crop"]
    return {
        "n": n_eval,
        "seed": seed,
        "crop_size": list(hw),
        "precision": precision,
        "fit_steps": fit_steps,
        "rows": rows,
        "timing": timing,
    }


def _fitted(model: Any, data: Any, body: Any, steps: int, device: Any) -> dict[str, float]:
    """PA-MPJPE, MPJPE and PVE (mm) of a mesh head's SMPL readout after ``steps`` steps of
    :func:`~hmrflow.stages.mesh.vertex_fit.fit_to_vertices` (as ``estimate.mesh_fit_steps`` runs it)."""
    import numpy as np
    import torch

    from hmrflow.priors.metrics import mpjpe, pa_mpjpe, pve
    from hmrflow.stages.mesh.train import make_batch
    from hmrflow.stages.mesh.vertex_fit import fit_to_vertices

    acc: dict[str, list[torch.Tensor]] = {"pa": [], "mp": [], "pve": []}
    for s in range(0, len(data), 64):
        images, targets = make_batch(data, np.arange(s, min(len(data), s + 64)))
        with torch.no_grad():
            out = model(images.to(device))
        rot, betas, _ = fit_to_vertices(body, out.vertices, out.pose6d, out.betas, steps=steps)
        with torch.no_grad():
            fit = body(rot, betas)
            gt = body(targets.rotmats.to(device), targets.betas.to(device))
        gt3d = targets.joints3d.to(device)
        acc["pa"].append(pa_mpjpe(fit.joints, gt3d).cpu())
        acc["mp"].append(mpjpe(fit.joints, gt3d).cpu())
        acc["pve"].append(pve(fit.vertices, gt.vertices, fit.joints[:, 0], gt.joints[:, 0]).cpu())
    mean = {k: float(torch.cat(v).float().mean()) for k, v in acc.items()}
    return {"fit_pa_mpjpe_mm": mean["pa"], "fit_mpjpe_mm": mean["mp"], "fit_pve_mm": mean["pve"]}


def heads_markdown(section: dict[str, Any]) -> list[str]:
    """Markdown lines of a :func:`head_rows` section."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"## Heads: SMPL head vs FastMETRO ({section['n']} held-out crops, seed {section['seed']}, "
        f"crops {section['crop_size'][0]}x{section['crop_size'][1]}, {section['precision']})",
        "",
        "SMPL = figures of the SMPL parameters the pipeline consumes; mesh = the head's own mesh "
        "and the joints regressed from it (FastMETRO only).  Ratios are to the first row.",
        "",
        "| model | head | mask | PA-MPJPE | MPJPE | PVE | mesh PA-MPJPE | mesh MPJPE | mesh PVE | "
        f"fit {section['fit_steps']} PA-MPJPE | fit PVE | GFLOPs/crop | FLOPs ratio | head FLOPs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in section["rows"]:
        mask = "-" if r["attention_mask"] is None else ("yes" if r["attention_mask"] else "no")
        lines.append(
            f"| {r['name']} | {r['head']} | {mask} | {f(r['pa_mpjpe_mm'])} | {f(r['mpjpe_mm'])} | {f(r['pve_mm'])} | "
            f"{f(r.get('mesh_pa_mpjpe_mm'))} | {f(r.get('mesh_mpjpe_mm'))} | {f(r.get('mesh_pve_mm'))} | "
            f"{f(r.get('fit_pa_mpjpe_mm'))} | {f(r.get('fit_pve_mm'))} | "
            f"{r['gflops_per_crop']:.3f} | {r['flops_ratio']:.2f}x | {r['head_flops_ratio']:.2f}x |"
        )
    lines += ["", "| model | batch | crops/s | time ratio |", "|---|---|---|---|"]
    for t in section["timing"]:
        lines.append(f"| {t['name']} | {t['batch']} | {t['crops_per_s']:.1f} | {t['time_ratio']:.2f}x |")
    lines.append("")
    return lines
