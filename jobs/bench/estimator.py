"""Estimator benchmark: ``hmrflow bench estimator``.

Throughput (crops/s) and analytic FLOPs of four variants -- baseline, ECLM (layer merging),
Mask-ToMe (person-protecting token merging) and both -- at several batch sizes, for the tiny
bundled model and for HMR2.0's ViT-H size (random weights: speed only).  All variants of a
model and batch size are timed interleaved (round-robin over repetitions, median kept) in one
run on one machine, so the ratios are fair.  ``--precision bf16`` (default) times them under
bf16 autocast, as the estimate stage runs on CPUs with bf16 support and on CUDA.

Accuracy of each variant of the bundled model, two ways:

* per frame on held-out synthetic clip sets (``--acc-sets``, default ``easy``: scene seeds
  never used in training), through :class:`~hmrflow.stages.mesh.stage.EstimateStage` exactly as
  the pipeline runs it, with ground-truth boxes and exact person masks, the same person-frames
  for every variant (paired differences are reported with their standard error);
* per crop on ``--n-eval`` held-out crops rendered like the training crops (seed 2000; the
  ECLM calibration set uses seed 1000).

Writes ``OUT/estimator_bench.json`` and ``OUT/estimator_bench.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

VARIANTS = ("baseline", "eclm", "tome", "both")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench_out/estimator", help="output folder (default bench_out/estimator)")
    p.add_argument("--weights", default=None, help="tiny estimator weights (default: the bundled ones, else random)")
    p.add_argument(
        "--eclm-weights",
        default=None,
        help="merged checkpoint from `hmrflow accelerate` (default: the bundled one when --weights is "
        "not given, else an ECLM search here with --eps/--spans/--order)",
    )
    p.add_argument("--eps", type=float, default=1.0, help="ECLM budget (mm) when searching here (default 1.0)")
    p.add_argument("--models", default="tiny,huge", help="comma-separated: tiny, huge (default both)")
    p.add_argument("--batches", default="1,16,64", help="batch sizes for the tiny model (default 1,16,64)")
    p.add_argument("--huge-batches", default="1,16", help="batch sizes for ViT-H (default 1,16; 64 is slow on CPU)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (default 5)")
    p.add_argument(
        "--tome-r",
        default=None,
        help="Mask-ToMe merges per block for the tiny model: one number (with --tome-schedule) or a "
        "comma-separated per-block list such as 14,7,4 (default: the archive preset's)",
    )
    p.add_argument("--tome-schedule", default="decreasing", choices=["constant", "decreasing"])
    p.add_argument("--huge-tome-r", type=int, default=None, help="Mask-ToMe r for ViT-H (default 192 // (2 * depth))")
    p.add_argument(
        "--precision",
        default="bf16",
        choices=["bf16", "fp32"],
        help="autocast dtype of the timed forwards and the accuracy runs (default bf16, as the estimate "
        "stage runs on CPUs with bf16 support and on CUDA)",
    )
    p.add_argument("--spans", default="2,3", help="ECLM group sizes when searching here (default 2,3)")
    p.add_argument("--order", choices=["cka", "span"], default="cka", help="ECLM candidate order when searching here")
    p.add_argument(
        "--acc-sets", default="easy", help="held-out clip sets for per-frame accuracy (comma-separated; '' = none)"
    )
    p.add_argument("--acc-clips", type=int, default=8, help="clips per accuracy set (default 8)")
    p.add_argument("--frame-step", type=int, default=10, help="every n-th frame of the accuracy clips (default 10)")
    p.add_argument(
        "--tome-group",
        type=int,
        default=16,
        help="Mask-ToMe sub-batch size (crops sorted by person size; 0 = whole batch; default 16)",
    )
    p.add_argument("--n-eval", type=int, default=256, help="held-out crops for accuracy (default 256)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration crops for the ECLM search (default 128)")
    p.add_argument("--cache", default=None, help="folder to cache rendered synthetic sets (default OUT/cache)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--settings",
        default="fasthmr,camerahmr",
        help="headline ViT-H rows: comma-separated of fasthmr, camerahmr ('' = none)",
    )
    p.add_argument(
        "--headline-batches", default="8", help="batch sizes of the headline rows (default 8; 64 is slow on CPU)"
    )
    p.add_argument(
        "--headline-precisions",
        default="bf16,fp32",
        help="precisions of the headline rows, timed side by side (default bf16,fp32)",
    )
    p.add_argument(
        "--heads",
        default="bundled",
        help="head comparison rows: comma-separated NAME=PATH estimators, or 'bundled' (the bundled SMPL-head "
        "and FastMETRO tiny estimators); '' = none",
    )
    p.add_argument("--heads-batches", default="1,64", help="batch sizes of the head comparison (default 1,64)")
    p.add_argument("--heads-n-eval", type=int, default=512, help="held-out crops of the head comparison")
    p.add_argument(
        "--heads-fit-steps", type=int, default=10, help="vertex-fit steps of the mesh heads' extra rows (0 = none)"
    )


def _bundled_weights(eclm: bool = False) -> Optional[Path]:
    """The bundled tiny estimator (or its layer-merged checkpoint), if installed."""
    from hmrflow.stages.mesh.checkpoint import bundled_weights_path

    path = bundled_weights_path("tiny", eclm=eclm)
    return path if path.is_file() else None


def _pairs_from_end(depth: int, n_merges: int, keep_first: int = 1):
    """A plan merging ``n_merges`` pairs of blocks walking from the last one (speed-only plan)."""
    from hmrflow.stages.mesh.accel.eclm import ECLMPlan

    groups, last = [], depth - 1
    while len(groups) < n_merges and last - 1 >= keep_first:
        groups.append((last - 1, last))
        last -= 2
    return ECLMPlan(depth, tuple(groups))


class _Variants:
    """One model in its four variants, switched by applying/removing the handles."""

    def __init__(self, model, plan, tome_cfg) -> None:
        self.model, self.plan, self.tome_cfg = model, plan, tome_cfg
        self._handles: list = []

    def set(self, variant: str) -> None:
        from hmrflow.stages.mesh.accel.eclm import apply_eclm
        from hmrflow.stages.mesh.accel.tome import apply_mask_tome

        for h in reversed(self._handles):
            h.remove()
        self._handles = []
        if variant in ("eclm", "both") and self.plan.groups:
            self._handles.append(apply_eclm(self.model, self.plan))
        if variant in ("tome", "both"):
            self._handles.append(apply_mask_tome(self.model, self.tome_cfg))

    def call(self, variant: str, x, cover):
        return self.model(x, protect=cover) if variant in ("tome", "both") else self.model(x)


def _flops(v: _Variants, variant: str, x, cover) -> dict[str, int]:
    """Analytic FLOPs per crop with the token counts this variant really produced on ``x``."""
    from hmrflow.stages.mesh.accel.flops import model_flops
    from hmrflow.stages.mesh.accel.tome import r_schedule, resolve_protect, tome_features

    v.set(variant)
    try:
        if variant in ("tome", "both"):
            bb = v.model.backbone
            protect = resolve_protect(cover, v.tome_cfg)
            rs = r_schedule(v.tome_cfg, len(bb.blocks))
            g = v.tome_cfg.group_size or x.shape[0]
            order = protect.sum(1).argsort(stable=True)
            totals = []
            for idx in order.split(g):  # the same sub-batches as the model's forward
                mt = tome_features(bb, x[idx], rs, protect[idx])
                totals.append((len(idx), model_flops(v.model, mt.block_tokens).as_dict()))
            return {k: round(sum(n * d[k] for n, d in totals) / x.shape[0]) for k in totals[0][1]}
        return model_flops(v.model).as_dict()
    finally:
        v.set("baseline")


def _time(v: _Variants, x, cover, reps: int, device, amp, variants: tuple[str, ...] = VARIANTS) -> dict[str, float]:
    """Median seconds per call of each of ``variants``, interleaved round-robin."""
    import torch

    def once(variant: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            v.call(variant, x, cover)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {k: [] for k in variants}
    warm = {}
    for variant in variants:  # warm-up; fast calls are repeated so one measurement lasts >= 0.2 s
        v.set(variant)
        warm[variant] = once(variant)
    inner = max(1, min(50, int(0.2 / max(min(warm.values()), 1e-6))))
    for _ in range(reps):
        for variant in variants:
            v.set(variant)
            times[variant].append(sum(once(variant) for _ in range(inner)) / inner)
    v.set("baseline")
    return {k: statistics.median(t) for k, t in times.items()}


def _bench_model(
    name: str, v: _Variants, images, cover, batches: list[int], reps: int, device, amp
) -> list[dict[str, Any]]:
    import torch

    rows = []
    for b in batches:
        idx = torch.arange(b) % images.shape[0]
        x, c = images[idx].to(device), cover[idx].to(device)
        with torch.inference_mode():
            fl = {k: _flops(v, k, x, c) for k in VARIANTS}
            secs = _time(v, x, c, reps, device, amp)
        for k in VARIANTS:
            rows.append(
                {
                    "model": name,
                    "batch": b,
                    "variant": k,
                    "crops_per_s": b / secs[k],
                    "sec_per_batch": secs[k],
                    "gflops_per_crop": fl[k]["total"] / 1e9,
                    "flops": fl[k],
                    "speedup": secs["baseline"] / secs[k],
                    "flops_ratio": fl["baseline"]["total"] / fl[k]["total"],
                }
            )
            log.info(
                "%s b=%d %-8s %8.1f crops/s  x%.2f  %.3f GFLOPs",
                name,
                b,
                k,
                b / secs[k],
                secs["baseline"] / secs[k],
                fl[k]["total"] / 1e9,
            )
    return rows


#: Published acceleration settings for HMR2.0's ViT-H (32 blocks, 192 tokens): layer pairs
#: merged by ECLM and Mask-ToMe merges in the first blocks.  FastHMR's HMR2.0 result merges 4
#: layers with token merging in the first 3 blocks; a CameraHMR-like setting merges 6.
SETTINGS: dict[str, dict[str, Any]] = {
    "fasthmr": {
        "pairs": 4,
        "tome_r": (40, 40, 40),
        "about": "FastHMR's HMR2.0 setting: 4 layers merged, r=40 in blocks 1-3",
    },
    "camerahmr": {"pairs": 6, "tome_r": (40, 40, 40), "about": "CameraHMR-like: 6 layers merged, r=40 in blocks 1-3"},
}
#: Share of the 16x12 token grid under the person in the headline rows (FastHMR reports about 45 %).
PERSON_SHARE = 0.45


def person_cover(batch: int, grid: tuple[int, int] = (16, 12), share: float = PERSON_SHARE, seed: int = 0):
    """(B, gh, gw) bool: a person-shaped block per crop (full height minus a margin, width set
    so that about ``share`` of the tokens are covered, shifted a little per crop)."""
    import torch

    gh, gw = grid
    g = torch.Generator().manual_seed(seed)
    rows = gh - 2
    cols = max(1, min(gw, round(share * gh * gw / rows)))
    cover = torch.zeros(batch, gh, gw, dtype=torch.bool)
    for i in range(batch):
        c0 = int(torch.randint(0, gw - cols + 1, (1,), generator=g)) if gw > cols else 0
        cover[i, 1 : 1 + rows, c0 : c0 + cols] = True
    return cover


def headline_rows(
    settings: list[str], batches: list[int], reps: int, device, precisions: list[str], size: Any = "huge"
) -> list[dict[str, Any]]:
    """ViT-H (random weights) under each published setting: unmerged vs ECLM + Mask-ToMe,
    timed interleaved per batch and precision; crops/s, speed-up, FLOPs ratio and the share
    of the FLOPs ratio realised.  ``size``: the estimator size or spec (32 blocks, 256x192 crops)."""
    import torch

    from hmrflow.stages.mesh.accel.tome import MaskToMeConfig
    from hmrflow.stages.mesh.model import build_estimator

    huge = build_estimator(size, (256, 192)).eval().to(device)
    rows = []
    for name in settings:
        st = SETTINGS[name]
        plan = _pairs_from_end(32, st["pairs"])
        cfg = MaskToMeConfig(r=tuple(st["tome_r"]), schedule="list", group_size=None)
        v = _Variants(huge, plan, cfg)
        for b in batches:
            x = torch.randn(b, 3, 256, 192, generator=torch.Generator().manual_seed(b)).to(device)
            cover = person_cover(b).to(device)
            with torch.inference_mode():
                fl = {k: _flops(v, k, x, cover)["total"] for k in ("baseline", "both")}
            for prec in precisions:
                with torch.inference_mode():
                    secs = _time(v, x, cover, reps, device, prec == "bf16", ("baseline", "both"))
                speed = secs["baseline"] / secs["both"]
                ratio = fl["baseline"] / fl["both"]
                rows.append(
                    {
                        "setting": name,
                        "about": st["about"],
                        "batch": b,
                        "precision": prec,
                        "crops_per_s_unmerged": b / secs["baseline"],
                        "crops_per_s_merged": b / secs["both"],
                        "speedup": speed,
                        "gflops_unmerged": fl["baseline"] / 1e9,
                        "gflops_merged": fl["both"] / 1e9,
                        "flops_ratio": ratio,
                        "realised": speed / ratio,
                    }
                )
                log.info(
                    "%s b=%d %s: x%.2f of FLOPs ratio x%.2f (%.0f %%)", name, b, prec, speed, ratio, 100 * speed / ratio
                )
    return rows


def _accuracy(v: _Variants, body, heldout, device, amp) -> dict[str, dict[str, float]]:
    """Crop-level accuracy of the four variants on ``heldout`` (a CalibrationSet with masks)."""
    import torch

    from hmrflow.priors.metrics import mpjpe, pa_mpjpe
    from hmrflow.stages.mesh.accel.eclm import predict_joints

    out = {}
    for k in VARIANTS:
        v.set(k)
        masks = heldout.token_masks if k in ("tome", "both") else None
        j = predict_joints(
            v.model,
            body,
            heldout.images,
            masks,
            batch_size=64,
            device=device,
            autocast_dtype=torch.bfloat16 if amp else None,
        )
        out[k] = {
            "mpjpe_mm": float(mpjpe(j, heldout.joints3d).mean()),
            "pa_mpjpe_mm": float(pa_mpjpe(j, heldout.joints3d).mean()),
        }
        log.info("crop accuracy %-8s MPJPE %.2f  PA-MPJPE %.2f mm", k, out[k]["mpjpe_mm"], out[k]["pa_mpjpe_mm"])
    v.set("baseline")
    return out


def _clip_accuracy(
    sets: list[str],
    clips: int,
    frame_step: int,
    weights: str,
    eclm_weights: str,
    tome_r: int | list[int],
    tome_schedule: str,
    tome_group: int,
    precision: str,
    device: str,
) -> dict[str, Any]:
    """Per-frame accuracy of the four variants as the estimate stage runs them (same frames, GT
    boxes and exact person masks for all) on the held-out bench clip sets."""
    from hmrflow.jobs.bench.estimator_eval import evaluate_set
    from hmrflow.pipeline.config import EstimateConfig
    from hmrflow.stages.mesh.stage import EstimateStage

    tome = dict(tome_r=tome_r, tome_schedule=tome_schedule, tome_group_size=tome_group)
    cfgs = {
        "baseline": EstimateConfig(weights=weights, precision=precision, device=device),
        "eclm": EstimateConfig(weights=eclm_weights, precision=precision, device=device),
        "tome": EstimateConfig(weights=weights, precision=precision, device=device, **tome),
        "both": EstimateConfig(weights=eclm_weights, precision=precision, device=device, **tome),
    }
    stages = {}
    for k, c in cfgs.items():
        stages[k] = EstimateStage(c)
        stages[k].setup()
    out: dict[str, Any] = {}
    for name in sets:
        t0 = time.time()
        r = evaluate_set(name, stages, clips, frame_step)
        out[name] = {
            "people_frames": r["estimated"],
            "detection": r["detection"],
            "variants": {
                k: {"all": d["all"], "height_ge_15pct": d["height_ge_15pct"]} for k, d in r["variants"].items()
            },
        }
        base = r["variants"]["baseline"]["pa_mpjpe_mm"]
        for k, d in r["variants"].items():  # paired difference per person-frame
            diff = d["pa_mpjpe_mm"] - base
            out[name]["variants"][k]["delta_pa_mpjpe_mm"] = float(diff.mean()) if len(diff) else 0.0
            out[name]["variants"][k]["delta_pa_mpjpe_se_mm"] = (
                float(diff.std(ddof=1) / max(1, len(diff)) ** 0.5) if len(diff) > 1 else 0.0
            )
            log.info(
                "clip accuracy %s %-8s PA-MPJPE %.2f MPJPE %.2f (delta PA %+.2f)",
                name,
                k,
                d["all"].get("pa_mpjpe_mm", float("nan")),
                d["all"].get("mpjpe_mm", float("nan")),
                out[name]["variants"][k]["delta_pa_mpjpe_mm"],
            )
        out[name]["seconds"] = round(time.time() - t0, 1)
    return out


def _markdown(report: dict[str, Any]) -> str:
    # the dtype is --precision's, which only the tiny/huge rows use; headline rows name theirs
    dtype = f", {report['dtype']}" if report.get("models") else ""
    lines = [f"# Estimator benchmark ({report['device']}{dtype}, {report['threads']} threads)", ""]
    if report.get("headline"):
        lines += [
            "## Headline: HMR2.0's ViT-H under published settings (random weights, speed only; "
            f"{100 * PERSON_SHARE:.0f} % of tokens under the person)",
            "",
            "| setting | batch | precision | crops/s unmerged | crops/s merged | speed-up | FLOPs ratio | realised |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in report["headline"]:
            lines.append(
                f"| {r['setting']} | {r['batch']} | {r['precision']} | {r['crops_per_s_unmerged']:.2f} | "
                f"{r['crops_per_s_merged']:.2f} | {r['speedup']:.2f}x | {r['flops_ratio']:.2f}x | {100 * r['realised']:.0f} % |"
            )
        lines.append("")
    for name, info in report["models"].items():
        lines += [
            f"## {name}: {info['description']}",
            "",
            f"ECLM plan: depth {info['eclm']['base_depth']} -> {info['eclm']['depth']} groups {info['eclm']['groups']} ({info['eclm']['source']}); "
            f"Mask-ToMe: {info['tome']}",
            "",
            "| batch | variant | crops/s | speed-up | GFLOPs/crop | FLOPs ratio |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["throughput"]:
            if r["model"] == name:
                lines.append(
                    f"| {r['batch']} | {r['variant']} | {r['crops_per_s']:.1f} | {r['speedup']:.2f}x | "
                    f"{r['gflops_per_crop']:.3f} | {r['flops_ratio']:.2f}x |"
                )
        lines.append("")
    for set_name, acc in (report.get("clip_accuracy") or {}).items():
        lines += [
            f"## Per-frame accuracy of the tiny model on held-out clips: `{set_name}` "
            f"({acc['people_frames']} person-frames, {acc['detection']}; the estimate stage as the pipeline runs it)",
            "",
            "| variant | PA-MPJPE mm | MPJPE mm | delta PA-MPJPE mm (paired, +- s.e.) |",
            "|---|---|---|---|",
        ]
        for k, e in acc["variants"].items():
            a = e["all"]
            lines.append(
                f"| {k} | {a['pa_mpjpe_mm']:.2f} | {a['mpjpe_mm']:.2f} | "
                f"{e['delta_pa_mpjpe_mm']:+.2f} +- {e['delta_pa_mpjpe_se_mm']:.2f} |"
            )
        lines.append("")
    if report.get("accuracy"):
        acc = report["accuracy"]
        lines += [
            f"## Crop-level accuracy of the tiny model ({acc['n']} held-out synthetic crops rendered like the training "
            f"crops, seed {acc['seed']}, {acc['weights']})",
            "",
            "| variant | MPJPE mm | PA-MPJPE mm | delta PA-MPJPE mm |",
            "|---|---|---|---|",
        ]
        base = acc["variants"]["baseline"]["pa_mpjpe_mm"]
        for k, e in acc["variants"].items():
            lines.append(f"| {k} | {e['mpjpe_mm']:.2f} | {e['pa_mpjpe_mm']:.2f} | {e['pa_mpjpe_mm'] - base:+.2f} |")
    if report.get("heads"):
        from hmrflow.jobs.bench.heads import heads_markdown

        lines += [""] + heads_markdown(report["heads"])
    return "\n".join(lines) + "\n"


def _parse_tome_r(text: Optional[str], default: int | list[int]) -> int | list[int]:
    from hmrflow.pipeline.errors import ConfigError

    if text is None or str(text).strip() == "":
        return default
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--tome-r: expected an integer or a comma-separated list, got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise ConfigError(f"--tome-r: merge counts must be >= 0, got {text!r}")
    return vals if "," in str(text) else vals[0]


def run(args: argparse.Namespace) -> int:
    """The command, leaving torch's global state (grad mode, RNG) as it was."""
    from hmrflow.pipeline.devices import isolated_torch_state

    with isolated_torch_state(seed=0):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from hmrflow.jobs.bench.heads import HEADS_SEED, head_rows, parse_heads
    from hmrflow.jobs.train.calibration import CALIB_SEED, HELDOUT_SEED, synthetic_calibration
    from hmrflow.pipeline.atomic import atomic_write_bytes
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.devices import resolve_device
    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.mesh.accel.eclm import ECLMConfig, apply_eclm, search_plan
    from hmrflow.stages.mesh.accel.tome import MaskToMeConfig
    from hmrflow.stages.mesh.checkpoint import load_estimator, save_estimator
    from hmrflow.stages.mesh.model import build_estimator

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else out / "cache"
    device = resolve_device(args.device, "--device")
    amp = args.precision == "bf16"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - {"tiny", "huge"}:
        raise ConfigError(f"--models: choose from tiny, huge; got {args.models!r}")
    archive = load_config("archive").estimate
    tome_r = _parse_tome_r(args.tome_r, archive.tome_r if archive.tome_enabled else 8)
    tome_schedule = "list" if isinstance(tome_r, list) else args.tome_schedule

    weights = Path(args.weights) if args.weights else _bundled_weights()
    if weights is not None:
        tiny, _ = load_estimator(weights)
        weights_desc = str(weights)
    else:
        tiny = build_estimator("tiny", (128, 96)).eval()
        weights_desc = "random weights (no bundled weights found)"
    tiny = tiny.to(device)
    heldout = synthetic_calibration(args.n_eval, tiny.image_size, tiny.token_grid, HELDOUT_SEED, cache)
    body = load_body_model("synthetic", device=device)

    # ECLM plan of the tiny model: from a merged checkpoint, a search here (trained weights), or a
    # fixed speed-only plan (random weights: errors mean nothing)
    tiny_depth = len(tiny.backbone.blocks)
    eclm_path: Optional[Path] = None
    eclm_file = args.eclm_weights or (None if args.weights else _bundled_weights(eclm=True))
    if eclm_file:
        _, plan = load_estimator(eclm_file)
        if plan is None:
            raise ConfigError(f"{eclm_file}: not a layer-merged checkpoint")
        plan_source = f"from {eclm_file}"
        eclm_path = Path(eclm_file)
    elif weights is not None:
        calib = synthetic_calibration(args.n_calib, tiny.image_size, tiny.token_grid, CALIB_SEED, cache)
        spans = tuple(int(v) for v in args.spans.split(","))
        res = search_plan(tiny, body, calib, ECLMConfig(eps_mm=args.eps, spans=spans, order=args.order), device=device)
        plan, plan_source = res.plan, f"ECLM search eps {args.eps} mm on {len(calib)} calibration crops"
        with apply_eclm(tiny, plan):
            eclm_path = save_estimator(tiny, out / "estimator_tiny_eclm.safetensors", plan=plan, report=res.as_dict())
    else:
        plan, plan_source = _pairs_from_end(tiny_depth, tiny_depth // 3), "fixed pairs from the end (random weights)"
    n_tok = tiny.token_grid[0] * tiny.token_grid[1]
    tiny_tome = MaskToMeConfig(
        r=tuple(tome_r) if isinstance(tome_r, list) else tome_r,
        schedule=tome_schedule,
        group_size=args.tome_group or None,
    )

    report: dict[str, Any] = {
        "device": str(device),
        "dtype": "bf16 autocast" if amp else "fp32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "reps": args.reps,
        "models": {},
        "throughput": [],
    }
    crops_tiny, cover_tiny = heldout.images, heldout.token_masks
    if "tiny" in models:
        v = _Variants(tiny, plan, tiny_tome)
        report["models"]["tiny"] = {
            "description": f"bundled tiny estimator, crops {tiny.image_size}, {n_tok} tokens, {weights_desc}",
            "eclm": {
                "base_depth": plan.base_depth,
                "depth": plan.depth,
                "groups": [list(g) for g in plan.groups],
                "source": plan_source,
            },
            "tome": f"r={tome_r} {tome_schedule}, sub-batches {args.tome_group or 'off'}, person tokens protected (exact masks)",
        }
        batches = [int(b) for b in args.batches.split(",")]
        report["throughput"] += _bench_model("tiny", v, crops_tiny, cover_tiny, batches, args.reps, device, amp)
        report["accuracy"] = {
            "n": len(heldout),
            "seed": HELDOUT_SEED,
            "weights": weights_desc,
            "variants": _accuracy(v, body, heldout, device, amp),
        }
        acc_sets = [a.strip() for a in args.acc_sets.split(",") if a.strip()]
        if acc_sets and weights is not None and eclm_path is not None:
            report["clip_accuracy"] = _clip_accuracy(
                acc_sets,
                args.acc_clips,
                args.frame_step,
                str(weights),
                str(eclm_path),
                tome_r,
                tome_schedule,
                args.tome_group,
                args.precision,
                str(device),
            )
    if "huge" in models:
        huge = build_estimator("huge", (256, 192)).eval().to(device)
        # the same fraction of depth removed as the tiny model's plan (at least a third), pairs from the end
        frac = max((plan.base_depth - plan.depth) / plan.base_depth, 1 / 3)
        hplan = _pairs_from_end(32, round(32 * frac))
        hr = args.huge_tome_r if args.huge_tome_r is not None else max(1, 192 // (2 * hplan.depth))
        hcfg = MaskToMeConfig(r=hr, schedule=args.tome_schedule, group_size=args.tome_group or None)
        images = F.interpolate(crops_tiny[:64], size=(256, 192), mode="bilinear", align_corners=False)
        cover = F.adaptive_avg_pool2d(F.interpolate(cover_tiny[:64, None], size=(64, 48), mode="nearest"), (16, 12))[
            :, 0
        ]
        report["models"]["huge"] = {
            "description": "HMR2.0 ViT-H/16 + decoder size, crops (256, 192), 192 tokens, random weights (speed only)",
            "eclm": {
                "base_depth": 32,
                "depth": hplan.depth,
                "groups": [list(g) for g in hplan.groups],
                "source": "fixed pairs from the end, same depth fraction as the tiny plan (random weights)",
            },
            "tome": f"r={hr} {args.tome_schedule}, sub-batches {args.tome_group or 'off'}, person tokens protected (masks upsampled)",
        }
        hb = [int(b) for b in args.huge_batches.split(",") if b]
        report["throughput"] += _bench_model(
            "huge", _Variants(huge, hplan, hcfg), images, cover, hb, max(2, args.reps // 2), device, amp
        )
    settings = [t.strip() for t in args.settings.split(",") if t.strip()]
    if set(settings) - set(SETTINGS):
        raise ConfigError(f"--settings: choose from {', '.join(SETTINGS)}; got {args.settings!r}")
    precisions = [t.strip() for t in args.headline_precisions.split(",") if t.strip()]
    if set(precisions) - {"bf16", "fp32"}:
        raise ConfigError(f"--headline-precisions: bf16 and/or fp32, got {args.headline_precisions!r}")
    if settings:
        report["headline"] = headline_rows(
            settings,
            [int(b) for b in args.headline_batches.split(",") if b.strip()],
            max(2, args.reps // 2),
            device,
            precisions,
        )
    heads = parse_heads(args.heads)
    if heads:
        report["heads"] = head_rows(
            heads,
            args.heads_n_eval,
            HEADS_SEED,
            [int(b) for b in args.heads_batches.split(",") if b.strip()],
            args.reps,
            device,
            amp,
            args.heads_fit_steps,
        )
    atomic_write_bytes(out / "estimator_bench.json", json.dumps(report, indent=2).encode())
    md = _markdown(report)
    atomic_write_bytes(out / "estimator_bench.md", md.encode())
    print(md)
    return 0
