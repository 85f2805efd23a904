"""``hmrflow train estimator``: train the ViT mesh estimator on synthetic person crops.

Steps (each resumable): render the training crops (chunks cached under ``WORK/data/train``,
seed ``--seed``) and the held-out validation crops (``WORK/data/val``, seed 900001, never used
for training), then train ``--epochs`` epochs of ``--steps-per-epoch`` AdamW steps (random
batches, warm-up + cosine schedule), validating (PA-MPJPE / MPJPE in mm) and checkpointing
``WORK/last.pt`` (model, optimiser, schedule, RNG) after every epoch.  ``--resume`` continues
from it.  The final weights go to ``--out`` (default ``WORK/final``) as
``estimator_<size>.safetensors`` with ``train_config.json`` and ``validation.json``.

``--no-wait`` trains on the training chunks already rendered (re-listed every epoch), so a
separate renderer can fill the cache while training runs (useful on small CPU machines).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

log = logging.getLogger(__name__)

VAL_SEED = 900001


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", default="estimator_train", help="cache of rendered crops and checkpoints")
    p.add_argument("--out", default=None, help="where the final weights go (default WORK/final)")
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "base", "large", "huge"])
    p.add_argument(
        "--head",
        default="smpl",
        choices=["smpl", "fastmetro"],
        help="smpl: HMR2.0's one-query SMPL decoder; fastmetro: mesh encoder-decoder with an SMPL readout",
    )
    p.add_argument(
        "--no-attention-mask",
        dest="attention_mask",
        action="store_false",
        help="fastmetro: no mesh-adjacency mask in the decoder (the paper's ablation)",
    )
    p.add_argument(
        "--init-backbone",
        default=None,
        help="start the ViT backbone from these estimator weights (the head starts fresh)",
    )
    p.add_argument("--image-size", default="128x96", help="crop HxW (multiples of 16), e.g. 128x96 or 256x192")
    p.add_argument("--crops", type=int, default=12288, help="training crops to render")
    p.add_argument("--val-crops", type=int, default=512, help="held-out validation crops")
    p.add_argument("--val-every-crops", type=int, default=256, help="crops used by the per-epoch validation")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"], help="autocast on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from WORK/last.pt")
    p.add_argument("--init", default=None, help="start from these estimator weights (fine-tuning)")
    p.add_argument("--no-wait", action="store_true", help="train on the chunks rendered so far")
    p.add_argument(
        "--save-fp32",
        dest="save_fp16",
        action="store_false",
        help="write fp32 final weights (default: fp16, half the size; loading casts to fp32)",
    )
    p.add_argument(
        "--merge-aware",
        type=float,
        default=0.0,
        help="weight of the loss of a randomly ECLM-merged copy of the model per step (0 = off; "
        "makes the weights robust to layer merging)",
    )
    p.add_argument("--merge-p", type=float, default=0.6, help="merge-aware: chance of a group at each position")
    p.add_argument(
        "--merge-distill",
        type=float,
        default=0.0,
        help="merge-aware: weight of distilling the merged copy towards the full model's outputs",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")


def _parse_hw(text: str) -> tuple[int, int]:
    from hmrflow.pipeline.errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size {text!r}: expected HxW such as 128x96") from None
    if h % 16 or w % 16 or h <= 0 or w <= 0:
        raise ConfigError(f"--image-size {text!r}: height and width must be positive multiples of 16")
    return h, w


def _rendered_parts(folder: Path):
    from hmrflow.jobs.train.estimator_data import CropSet

    parts = sorted(d for d in folder.glob("part_*") if (d / "height_frac.npy").is_file())
    if not parts:
        return None
    return CropSet.cat([CropSet.load(d, mmap=False) for d in parts])


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from hmrflow.jobs.train.estimator_data import render_crop_cache
    from hmrflow.pipeline.atomic import atomic_write_json
    from hmrflow.pipeline.devices import resolve_device
    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.mesh.accel.eclm import apply_eclm, deepest_plan
    from hmrflow.stages.mesh.checkpoint import save_estimator
    from hmrflow.stages.mesh.losses import LossWeights
    from hmrflow.stages.mesh.train import EstimatorTrainer, TrainConfig, evaluate_crops, make_batch

    torch.set_num_threads(max(1, args.threads))
    hw = _parse_hw(args.image_size)
    work = Path(args.work_dir)
    out_dir = Path(args.out) if args.out else work / "final"
    ckpt = work / "last.pt"
    if args.resume and not ckpt.is_file():
        raise ConfigError(f"{ckpt}: no checkpoint to resume from (run without --resume first)")
    if args.seed == VAL_SEED:
        raise ConfigError(f"--seed {VAL_SEED} is the validation seed; pick another")
    device = resolve_device(args.device, "--device")
    t0 = time.time()
    tag = f"{hw[0]}x{hw[1]}"
    val = render_crop_cache(work / "data" / f"val_s{VAL_SEED}_{tag}", args.val_crops, VAL_SEED, hw)
    train_dir = work / "data" / f"train_s{args.seed}_{tag}"
    train = None if args.no_wait else render_crop_cache(train_dir, args.crops, args.seed, hw)
    render_s = time.time() - t0

    cfg = TrainConfig(
        size=args.size,
        image_size=hw,
        head=args.head,
        attention_mask=args.attention_mask,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        precision=args.precision,
        losses=LossWeights(),
        merge_aware=args.merge_aware,
        merge_p=args.merge_p,
        merge_distill=args.merge_distill,
    )
    body = load_body_model("synthetic")
    init_model = None
    if args.init:
        from hmrflow.stages.mesh.checkpoint import load_estimator

        init_model, _ = load_estimator(args.init, args.size, hw)
    trainer = EstimatorTrainer(
        cfg, body, total_steps=args.epochs * args.steps_per_epoch, device=device, model=init_model
    )
    if args.init_backbone and not args.resume:
        from hmrflow.stages.mesh.checkpoint import load_estimator

        src, _ = load_estimator(args.init_backbone, args.size, hw)
        trainer.model.backbone.load_state_dict(src.backbone.state_dict())
        log.info("backbone from %s; %s head starts fresh", args.init_backbone, args.head)
    if args.resume:
        trainer.load(ckpt)
        log.info("resumed from %s at epoch %d step %d", ckpt, trainer.epoch, trainer.step)
    val_small = val.select(slice(0, min(len(val), args.val_every_crops)))
    train_t0 = time.time()
    while trainer.epoch < args.epochs:
        if args.no_wait:
            train = _rendered_parts(train_dir)
            if train is None:
                raise ConfigError(f"{train_dir}: no rendered training chunks yet (run without --no-wait)")
        assert train is not None
        sums: dict[str, float] = {}
        bar = tqdm(range(args.steps_per_epoch), desc=f"epoch {trainer.epoch + 1}/{args.epochs}", unit="step")
        for _ in bar:
            idx = trainer.np_rng.choice(len(train), size=args.batch_size, replace=False)
            images, targets = make_batch(train, idx, augment=True, gen=trainer.gen, ray_frame=cfg.ray_frame)
            res = trainer.train_step(images, targets)
            for k, v in res.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{res['total']:.3f}", mpjpe=f"{res['mpjpe_mm']:.0f}mm")
            if args.max_steps is not None and trainer.step >= args.max_steps:
                break
        trainer.epoch += 1
        ev = evaluate_crops(trainer.model, val_small, body, args.batch_size, device, args.precision, cfg.ray_frame)
        rec = {
            "epoch": trainer.epoch,
            "step": trainer.step,
            "train_crops_available": len(train),
            "elapsed_s": round(time.time() - train_t0, 1),
            **{f"train_{k}": v / max(1, len(bar)) for k, v in sums.items()},
            "val_pa_mpjpe_mm": ev["pa_mpjpe_mm"],
            "val_mpjpe_mm": ev["mpjpe_mm"],
            "val_pve_mm": ev["pve_mm"],
            **{f"val_{k}": ev[k] for k in ("mesh_pa_mpjpe_mm", "mesh_mpjpe_mm", "mesh_pve_mm") if k in ev},
        }
        if cfg.merge_aware > 0:  # how the deepest merge of the family does on the same crops
            ref = deepest_plan(len(trainer.model.backbone.blocks), cfg.merge_spans)
            with apply_eclm(trainer.model, ref):
                evm = evaluate_crops(
                    trainer.model, val_small, body, args.batch_size, device, args.precision, cfg.ray_frame
                )
            rec.update(
                {
                    "val_merged_plan": [list(g) for g in ref.groups],
                    "val_merged_pa_mpjpe_mm": evm["pa_mpjpe_mm"],
                    "val_merged_mpjpe_mm": evm["mpjpe_mm"],
                }
            )
            log.info(
                "epoch %d: merged %s val PA-MPJPE %.1f mm, MPJPE %.1f mm",
                trainer.epoch,
                ref.groups,
                evm["pa_mpjpe_mm"],
                evm["mpjpe_mm"],
            )
        trainer.history.append(rec)
        trainer.save(ckpt)
        log.info(
            "epoch %d: train loss %.4f, val PA-MPJPE %.1f mm, MPJPE %.1f mm",
            trainer.epoch,
            rec["train_total"],
            rec["val_pa_mpjpe_mm"],
            rec["val_mpjpe_mm"],
        )
        if args.max_steps is not None and trainer.step >= args.max_steps:
            break

    # the figures recorded are those of the weights as written (fp16 round trip by default)
    if args.save_fp16:
        with torch.no_grad():
            for p_ in trainer.model.parameters():
                p_.copy_(p_.half().float())
    final = evaluate_crops(trainer.model, val, body, args.batch_size, device, args.precision, cfg.ray_frame)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = (
        f"estimator_{args.size}.safetensors"
        if args.head == "smpl"
        else f"estimator_{args.size}_{args.head}.safetensors"
    )
    weights = save_estimator(
        trainer.model,
        out_dir / name,
        dtype=torch.float16 if args.save_fp16 else torch.float32,
    )
    atomic_write_json(
        out_dir / "train_config.json",
        {
            **cfg.to_dict(),
            "steps_per_epoch": args.steps_per_epoch,
            "train_crops": args.crops,
            "train_seed": args.seed,
            "val_seed": VAL_SEED,
            "val_crops": len(val),
            "device": str(device),
            "threads": args.threads,
            "init": args.init,
            "init_backbone": args.init_backbone,
            "machine": platform.machine(),
            "torch": torch.__version__,
            "render_s": round(render_s, 1),
            "train_s": round(time.time() - train_t0, 1),
            "data": "jobs/train/estimator_data.py render_crops (synthetic body, motion library poses)",
        },
    )
    atomic_write_json(
        out_dir / "validation.json",
        {
            "held_out_crops": {
                "seed": VAL_SEED,
                "n": final["n"],
                "pa_mpjpe_mm": final["pa_mpjpe_mm"],
                "mpjpe_mm": final["mpjpe_mm"],
                "pve_mm": final["pve_mm"],
                **{k: final[k] for k in ("mesh_pa_mpjpe_mm", "mesh_mpjpe_mm", "mesh_pve_mm") if k in final},
                "pa_mpjpe_median_mm": final["pa_mpjpe_median_mm"],
                "mpjpe_median_mm": final["mpjpe_median_mm"],
            },
            "per_epoch": trainer.history,
        },
    )
    log.info("wrote %s (val PA-MPJPE %.1f mm, MPJPE %.1f mm)", weights, final["pa_mpjpe_mm"], final["mpjpe_mm"])
    return 0
