"""Make a faster estimator checkpoint: ``hmrflow accelerate --weights W --eps 1.0 --out W_fast``.

Runs ECLM (error-constrained layer merging, :mod:`hmrflow.stages.mesh.accel.eclm`) on
calibration crops with 3D ground truth -- a held-out synthetic set rendered with a fixed seed
by default, or ``--calib DIR`` in the synthetic ground-truth format (``DIR/<clip>/gt.npz`` +
``<clip>.mp4``, see docs/FORMATS.md) -- and writes the merged checkpoint (the merge plan and
architecture in its header: loading it needs no calibration) plus a report
``<out>.report.json`` / ``.md`` (layers merged, error after each step, final depth, FLOPs).
Mask-ToMe needs no checkpoint change; it is switched on where the model is run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

from hmrflow.jobs.train.calibration import CALIB_SEED

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="estimator checkpoint (.safetensors/.pt)")
    p.add_argument("--out", required=True, help="merged checkpoint to write (.safetensors)")
    p.add_argument("--eps", type=float, default=1.0, help="allowed calibration MPJPE increase in mm (default 1.0)")
    p.add_argument(
        "--metric", choices=["mpjpe_mm", "pa_mpjpe_mm"], default="mpjpe_mm", help="error the budget applies to"
    )
    p.add_argument("--spans", default="2,3", help="comma-separated group sizes tried per position (default 2,3)")
    p.add_argument(
        "--order",
        choices=["cka", "span"],
        default="cka",
        help="candidates ending at one block: highest CKA first (default) or longest group first",
    )
    p.add_argument("--keep-first", type=int, default=1, help="never merge the first K blocks (default 1)")
    p.add_argument("--calib", default=None, help="calibration folder in the ground-truth format (default: synthetic)")
    p.add_argument("--n-calib", type=int, default=256, help="calibration crops (default 256)")
    p.add_argument("--seed", type=int, default=CALIB_SEED, help="seed of the synthetic calibration set")
    p.add_argument("--size", default=None, help="estimator size name when the checkpoint does not say")
    p.add_argument("--image-size", default=None, help="crop H,W when the checkpoint does not say (e.g. 256,192)")
    p.add_argument(
        "--body-model", default="synthetic", help="body model for the joints: synthetic or smpl (default synthetic)"
    )
    p.add_argument("--cache", default=None, help="folder to cache the rendered calibration set in")
    p.add_argument("--fp16", action="store_true", help="store the merged weights in half precision (half the file)")


def _parse_hw(text: Optional[str]) -> Optional[tuple[int, int]]:
    from hmrflow.pipeline.errors import ConfigError

    if not text:
        return None
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--image-size: expected H,W (e.g. 256,192), got {text!r}") from None
    return h, w


def run(args: argparse.Namespace) -> int:
    """The command, leaving torch's global state (grad mode, RNG) as it was."""
    from hmrflow.pipeline.devices import isolated_torch_state

    with isolated_torch_state(seed=0):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from hmrflow.jobs.train.calibration import (
        gt_dir_calibration,
        synthetic_calibration,
        write_report,
    )
    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.mesh.accel.eclm import (
        ECLMConfig,
        apply_eclm,
        search_plan,
    )
    from hmrflow.stages.mesh.accel.flops import model_flops
    from hmrflow.stages.mesh.checkpoint import load_estimator, save_estimator

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        out = out.with_suffix(".safetensors")
    try:
        spans = tuple(int(s) for s in str(args.spans).split(","))
    except ValueError:
        raise ConfigError(f"--spans: expected comma-separated integers, got {args.spans!r}") from None
    cfg = ECLMConfig(
        eps_mm=args.eps, error_metric=args.metric, spans=spans, keep_first=args.keep_first, order=args.order
    )
    model, prior_plan = load_estimator(args.weights, size=args.size, image_size=_parse_hw(args.image_size))
    if prior_plan is not None:
        raise ConfigError(
            f"{args.weights}: already layer-merged ({prior_plan.groups}); start from the unmerged weights"
        )
    if args.calib:
        calib = gt_dir_calibration(Path(args.calib), model.image_size, model.token_grid, args.n_calib)
        source = str(args.calib)
    else:
        calib = synthetic_calibration(
            args.n_calib, model.image_size, model.token_grid, args.seed, Path(args.cache) if args.cache else None
        )
        source = f"synthetic seed {args.seed}"
    body = load_body_model(args.body_model)
    result = search_plan(model, body, calib, cfg)
    flops_base = model_flops(model).as_dict()
    handle = apply_eclm(model, result.plan)
    flops_merged = model_flops(model).as_dict()
    report = {
        "weights": str(args.weights),
        "out": str(out),
        "eps_mm": args.eps,
        "metric": args.metric,
        "calibration": {"source": source, "n": len(calib)},
        **result.as_dict(),
        "flops": {"baseline": flops_base, "merged": flops_merged},
    }
    save_estimator(
        model,
        out,
        plan=result.plan,
        report={k: report[k] for k in ("eps_mm", "metric", "baseline", "final")},
        dtype=torch.float16 if args.fp16 else None,
    )
    handle.remove()
    jpath, mpath = write_report(report, out)
    log.info(
        "depth %d -> %d, %s %.2f -> %.2f mm; wrote %s (report %s)",
        result.plan.base_depth,
        result.plan.depth,
        args.metric,
        result.baseline[args.metric],
        result.final[args.metric],
        out,
        mpath,
    )
    print(mpath.read_text())
    return 0
