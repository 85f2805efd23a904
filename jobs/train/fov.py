"""``hmrflow train fov``: train the camera network (:mod:`hmrflow.stages.camera.fov`):
field of view and the up direction.

Steps (each resumable): render training and held-out frames with random fields of view and
camera tilts (shards cached in ``WORK/data``, :mod:`hmrflow.jobs.train.fov_data`), train
with a checkpoint per epoch (``WORK/last.pt``), then write ``fov.safetensors`` (fp16),
``train_config.json`` and ``validation.json`` (per-frame and per-scene errors in degrees of
vertical field of view and of the up direction, on the held-out frames) into ``--out``
(default ``WORK/final``).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TRAIN_SEED = 0
VAL_SEED = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", default="fov_train", help="cache of rendered frames and checkpoints")
    p.add_argument("--out", default=None, help="where the final weights go (default WORK/final)")
    p.add_argument("--frames", type=int, default=12000, help="training frames to render")
    p.add_argument("--val-frames", type=int, default=1000, help="held-out frames (other scene seeds)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=16, help="channels of the first layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from WORK/last.pt")


def vfov_errors(pred_rel: np.ndarray, true_rel: np.ndarray) -> np.ndarray:
    """Absolute vertical field-of-view errors (degrees) of focal lengths in image heights."""
    from hmrflow.stages.camera.fov import vfov_from_focal_rel

    return np.abs(vfov_from_focal_rel(pred_rel) - vfov_from_focal_rel(true_rel))


def evaluate(model: Any, data: dict[str, np.ndarray], batch: int = 256) -> dict[str, float]:
    """Per-frame and per-scene (median over a scene's frames) field-of-view errors, and per-frame
    up-direction errors, degrees."""
    import torch

    from hmrflow.stages.camera.fov import aggregate_focal_rel, split_output, to_input

    model.eval()
    preds, ups = [], []
    with torch.no_grad():
        for a in range(0, len(data["images"]), batch):
            x = to_input(data["images"][a : a + batch])
            log_f, up = split_output(model(x, torch.from_numpy(data["aspect"][a : a + batch])))
            preds.append(log_f.exp().numpy())
            ups.append(up.numpy())
    pred = np.concatenate(preds)
    up_err = np.degrees(np.arccos(np.clip((np.concatenate(ups) * data["up"]).sum(1), -1.0, 1.0)))
    err = vfov_errors(pred, data["focal_rel"])
    scenes = np.unique(data["scene_seed"])
    per_scene = np.array(
        [
            vfov_errors(
                np.array([aggregate_focal_rel(pred[data["scene_seed"] == s])]),
                data["focal_rel"][data["scene_seed"] == s][:1],
            )[0]
            for s in scenes
        ]
    )
    return {
        "frames": int(len(err)),
        "frame_median_deg": float(np.median(err)),
        "frame_mean_deg": float(np.mean(err)),
        "frame_p90_deg": float(np.percentile(err, 90)),
        "scenes": int(len(scenes)),
        "scene_median_deg": float(np.median(per_scene)),
        "scene_p90_deg": float(np.percentile(per_scene, 90)),
        "up_frame_median_deg": float(np.median(up_err)),
        "up_frame_p90_deg": float(np.percentile(up_err, 90)),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from hmrflow.jobs.train.fov_data import RENDER_SIZES, VFOV_RANGE, render_fov_shards
    from hmrflow.pipeline.atomic import atomic_write_json
    from hmrflow.stages.camera.fov import FovNet, save_fov, split_output, to_input

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    out = Path(args.out) if args.out else work / "final"
    val = render_fov_shards(work / "data", args.val_frames, VAL_SEED)
    train = render_fov_shards(work / "data", args.frames, TRAIN_SEED)
    if set(np.unique(val["scene_seed"])) & set(np.unique(train["scene_seed"])):
        raise RuntimeError("training and validation scenes overlap")
    torch.manual_seed(args.seed)
    model = FovNet(width=args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(train["images"]) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.1)
    start, history = 0, []
    ckpt = work / "last.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history = state["epoch"], state["history"]
        log.info("resumed at epoch %d", start)
    rng = np.random.default_rng(args.seed)
    target = torch.from_numpy(np.log(train["focal_rel"]))
    target_up = torch.from_numpy(train["up"]).float()
    aspect = torch.from_numpy(train["aspect"])
    t0 = time.time()
    for epoch in range(start, args.epochs):
        model.train()
        order = rng.permutation(len(target))
        total = 0.0
        for a in range(0, len(order), args.batch_size):
            idx = order[a : a + args.batch_size]
            x = to_input(train["images"][idx])
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)  # a mirror keeps the field of view
            up = target_up[idx].clone()
            up[:, 0] = torch.where(flip, -up[:, 0], up[:, 0])  # ... and mirrors the roll
            x = (x * torch.from_numpy(rng.uniform(0.7, 1.3, (len(idx), 1, 1, 1))).float()).clamp(0, 1)
            log_f, up_pred = split_output(model(x, aspect[idx]))
            loss = torch.nn.functional.smooth_l1_loss(log_f, target[idx], beta=0.05)
            loss = loss + (1.0 - (up_pred * up).sum(1)).mean() * 4.0
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        metrics = evaluate(model, val)
        history.append({"epoch": epoch + 1, "train_loss": total / len(order), **metrics})
        log.info("epoch %d loss %.4f val %s", epoch + 1, total / len(order), metrics)
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch + 1,
                "history": history,
            },
            ckpt,
        )
    out.mkdir(parents=True, exist_ok=True)
    save_fov(model, out / "fov.safetensors", {"train_frames": len(target)})
    config = {
        "target": "fov",
        "frames": args.frames,
        "val_frames": args.val_frames,
        "train_seed": TRAIN_SEED,
        "val_seed": VAL_SEED,
        "vfov_range_deg": list(VFOV_RANGE),
        "render_sizes": [list(s) for s in RENDER_SIZES],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "width": args.width,
        "seed": args.seed,
        "threads": args.threads,
        "train_seconds_this_run": round(time.time() - t0, 1),
        "machine": platform.processor() or platform.machine(),
        "command": "hmrflow train fov "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in ("frames", "val_frames", "epochs", "batch_size", "lr", "width", "seed")
        ),
    }
    from hmrflow.jobs.train.fov_data import PITCH_RANGE_DEG, ROLL_STD_DEG

    config.update(
        pitch_range_deg=list(PITCH_RANGE_DEG), roll_std_deg=ROLL_STD_DEG, loss="smooth_l1(log f) + 4 (1 - cos up)"
    )
    atomic_write_json(out / "train_config.json", config)
    atomic_write_json(out / "validation.json", {"held_out": history[-1] if history else None, "history": history})
    log.info("wrote %s", out)
    return 0
