"""``hmrflow train onestage``: train the one-stage (SAT-HMR) estimator on rendered full frames.

Steps, each resumable: render training frames of the synthetic world (shards cached in
``WORK/data``: mixed, overlapping and far people, :mod:`~hmrflow.jobs.train.onestage_data`),
start the encoders from the bundled crop estimator's ViT (same block shape), train with
checkpoints (``WORK/last.pt`` every ``--save-every`` steps; ``--resume`` continues), then write
the float16 weights and ``train_config.json`` into ``--out``.  Validation is separate:
``hmrflow bench pipeline`` with ``--variants two-stage onestage`` on fresh seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

TRAIN_SEEDS = (1, 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", default="onestage_train", help="cache of rendered frames and checkpoints")
    p.add_argument("--out", default=None, help="where the final weights go (default WORK/final)")
    p.add_argument("--frames", type=int, default=8000, help="training frames to render (split over two seeds)")
    p.add_argument("--size", default="tiny", help="model size (tiny or paper)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--zoom", type=float, default=0.5, help="share of images shrunk (0.45-1x) to make people smaller")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from WORK/last.pt")
    p.add_argument(
        "--rescan",
        type=int,
        default=0,
        help="train on the shards already in WORK/data (render nothing) and load new ones every N steps "
        "(while another process renders more); 0: render --frames first",
    )
    p.add_argument(
        "--val-frames",
        type=int,
        default=60,
        help="held-out frames per family (mixed, overlap, far) scored into validation.json (0: none)",
    )
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (and save) after this wall time (0: no limit)")
    p.add_argument(
        "--init-estimator",
        default="bundled",
        help="crop estimator weights whose ViT starts the encoders ('bundled', a file, or 'none')",
    )


def build_batch(
    data: Any, idx: np.ndarray, spec: Any, body_model: Any, rng: np.random.Generator, zoom: float
) -> tuple[torch.Tensor, list, torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
    """Images, targets, intrinsics and scale maps of frames ``idx`` of ``data`` (a
    :class:`~hmrflow.jobs.train.onestage_data.PeopleFrames` rendered at the high-resolution input
    size), with a random shrink of some images (people get smaller, the rest is padding)."""
    import torch.nn.functional as F

    from hmrflow.stages.mesh.crop import normalise_uint8
    from hmrflow.stages.onestage.losses import PeopleTargets, project
    from hmrflow.stages.onestage.tokens import scale_map_targets

    th, tw = spec.high_size
    gh, gw = spec.grid
    imgs = normalise_uint8(data.images[idx])
    if imgs.shape[-2:] != (th, tw):
        raise ValueError(f"training frames are {tuple(imgs.shape[-2:])}, the model's input is {(th, tw)}")
    out = torch.zeros_like(imgs)
    Ks, targets, confs, scales = [], [], [], []
    for j, i in enumerate(idx):
        s = float(rng.uniform(0.45, 1.0)) if rng.random() < zoom else 1.0
        nh, nw = round(th * s), round(tw * s)
        ox, oy = int(rng.integers(0, tw - nw + 1)), int(rng.integers(0, th - nh + 1))
        img = imgs[j] if s == 1.0 else F.interpolate(imgs[j : j + 1], size=(nh, nw), mode="bilinear", antialias=True)[0]
        out[j, :, oy : oy + nh, ox : ox + nw] = img
        K = torch.from_numpy(data.K[i]).clone()
        K[:2] *= torch.tensor([nw / tw, nh / th])[:, None]
        K[0, 2] += ox
        K[1, 2] += oy
        Ks.append(K)
        keep = np.nonzero(data.present[i])[0]
        box = torch.from_numpy(data.boxes[i, keep]).reshape(-1, 4) * torch.tensor([nw / tw, nh / th] * 2)
        box = box + torch.tensor([ox, oy, ox, oy], dtype=box.dtype)
        joints = torch.from_numpy(data.joints[i, keep]).reshape(-1, 24, 3)
        Kn = K[None].expand(len(keep), 3, 3)
        j2d = project(joints, Kn, (tw, th)) if len(keep) else torch.zeros(0, 24, 2)
        z = joints[:, 0, 2]
        rot = torch.zeros(len(keep), 24, 3, 3)
        if len(keep):
            from hmrflow.priors.rotations import axis_angle_to_matrix

            rot = axis_angle_to_matrix(torch.from_numpy(data.poses[i, keep]).reshape(-1, 24, 3))
        cxcywh = torch.cat([(box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]], -1) / torch.tensor([tw, th] * 2)
        targets.append(
            PeopleTargets(
                boxes=cxcywh.float(),
                root_uv=j2d[:, 0].float(),
                log_depth=torch.log(z / (K[0, 0] / max(tw, th))).float(),
                rotmats=rot.float(),
                betas=torch.from_numpy(data.betas[i, keep]).reshape(-1, 10).float(),
                joints=joints.float(),
                joints2d=j2d.float(),
            )
        )
        c, sc = scale_map_targets(box.numpy(), z.numpy(), (tw, th), (gh, gw))
        confs.append(torch.from_numpy(c))
        scales.append(torch.from_numpy(sc))
    info = {"people": sum(len(t) for t in targets)}
    return out, targets, torch.stack(Ks).float(), (torch.stack(confs), torch.stack(scales)), info


def learning_rate(step: int, total: int, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` share of ``total`` steps, then cosine to 1 % of
    ``peak``.  A function of the step alone, so a resumed run may change ``--steps``."""
    w = max(1, int(warmup * total))
    if step < w:
        return peak * (step + 1) / w
    t = min(1.0, (step - w) / max(1, total - w))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def token_targets(toks: Any, targets: list, spec: Any) -> torch.Tensor:
    """(B, M) 1 where a token's centre lies inside one of its image's person boxes."""
    gh, gw = spec.grid
    x = (toks.centres[..., 1] + 0.5) / gw
    y = (toks.centres[..., 0] + 0.5) / gh
    out = torch.zeros(toks.valid.shape)
    for i, t in enumerate(targets):
        if len(t) == 0:
            continue
        c, s = t.boxes[:, :2], t.boxes[:, 2:] / 2
        inside = (
            (x[i, :, None] >= c[None, :, 0] - s[None, :, 0])
            & (x[i, :, None] <= c[None, :, 0] + s[None, :, 0])
            & (y[i, :, None] >= c[None, :, 1] - s[None, :, 1])
            & (y[i, :, None] <= c[None, :, 1] + s[None, :, 1])
        )
        out[i] = inside.any(-1).float()
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hmrflow.jobs.train.onestage_data import PeopleFrames, render_people_shards
    from hmrflow.pipeline.atomic import atomic_write_text
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.onestage.losses import onestage_losses
    from hmrflow.stages.onestage.model import SIZES, OneStageEstimator
    from hmrflow.stages.onestage.weights import save_onestage

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.size not in SIZES:
        log.error("--size: unknown one-stage size %r; choose one of %s", args.size, ", ".join(SIZES))
        return 2
    spec = SIZES[args.size]
    size_wh = (spec.high_size[1], spec.high_size[0])
    per_seed = -(-args.frames // len(TRAIN_SEEDS))

    def available() -> PeopleFrames:
        files = sorted((work / "data").glob(f"onestage_s*_{size_wh[0]}x{size_wh[1]}_*.npz"))
        if not files:
            raise SystemExit(f"{work / 'data'}: no rendered shards to train on")
        return PeopleFrames.cat([PeopleFrames.load(f) for f in files])

    if args.rescan:
        data = available()
    else:
        data = PeopleFrames.cat([render_people_shards(work / "data", per_seed, s, size_wh) for s in TRAIN_SEEDS])
    log.info("training frames: %d (%d people)", len(data), int(data.present.sum()))
    body = load_body_model("synthetic", device="cpu")
    model = OneStageEstimator(spec)
    init_note = "none"
    if args.init_estimator != "none":
        from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator

        src = bundled_weights_path("tiny") if args.init_estimator == "bundled" else Path(args.init_estimator)
        est, _ = load_estimator(src)
        try:
            n = model.init_from_estimator(est.backbone)
            init_note = f"{src.name}: {n} ViT blocks, patch and position embeddings"
        except ValueError as exc:
            log.warning("%s: %s; starting from scratch", src, exc)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, history = 0, []
    ckpt = work / "last.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, history = int(state["step"]), state["history"]
        log.info("resumed at step %d", step)
    rng = np.random.default_rng([args.seed, step])
    t0 = time.time()
    model.train()
    bar = tqdm(total=args.steps, initial=step, desc="train onestage", unit="step")
    running: dict[str, float] = {}

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "history": history,
            },
            tmp,
        )
        tmp.replace(ckpt)

    while step < args.steps:
        if args.rescan and step % args.rescan == 0 and step:
            data = available()
            log.info("step %d: %d training frames", step, len(data))
        idx = rng.choice(len(data), args.batch_size, replace=False)
        images, targets, K, maps, _ = build_batch(data, idx, spec, body, rng, args.zoom)
        out = model(images, scale_targets=maps)
        loss, parts = onestage_losses(out, targets, K, maps, token_targets(out.tokens, targets, spec), body, size_wh)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, args.steps, args.lr)
        opt.step()
        step += 1
        for k, v in parts.items():
            running[k] = 0.95 * running.get(k, v) + 0.05 * v
        running["loss"] = 0.95 * running.get("loss", float(loss.detach())) + 0.05 * float(loss.detach())
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(
                loss=f"{running['loss']:.2f}", j3d=f"{running.get('j3d', 0):.3f}", cls=f"{running['cls']:.2f}"
            )
        if step % args.save_every == 0 or step == args.steps:
            history.append({"step": step, **{k: round(v, 5) for k, v in running.items()}})
            log.info("step %d %s", step, json.dumps(history[-1]))
            save()
        if args.max_minutes and (time.time() - t0) / 60 > args.max_minutes:
            log.info("stopping at step %d after %.1f min (--max-minutes)", step, args.max_minutes)
            save()
            break
    bar.close()
    out_dir = Path(args.out) if args.out else work / "final"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_onestage(model, out_dir / "onestage_tiny.safetensors", {"steps": step})
    config = {
        "target": "onestage",
        "size": args.size,
        "spec": spec.to_dict(),
        "steps_done": step,
        "steps_planned": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "zoom": args.zoom,
        "frames": len(data),
        "frames_note": "with --rescan the set grew during training (shards rendered beside it)",
        "train_seeds": list(TRAIN_SEEDS),
        "frame_size_wh": list(size_wh),
        "init": init_note,
        "threads": args.threads,
        "machine": platform.platform(),
        "history": history,
    }
    atomic_write_text(out_dir / "train_config.json", json.dumps(config, indent=1) + "\n")
    if args.val_frames:
        write_validation(model, body, work / "val", out_dir / "validation.json", args.val_frames, size_wh)
    log.info("wrote %s", out_dir)
    return 0


def write_validation(
    model: Any, body: Any, cache: Path, path: Path, n: int, size_wh: tuple[int, int]
) -> dict[str, Any]:
    """Score ``model`` on ``n`` held-out frames per family (rendered once into ``cache``) and
    write the scores to ``path`` (JSON): the adaptive tokens and the three ablations."""
    from hmrflow.jobs.train.onestage_data import render_people_shards
    from hmrflow.jobs.train.onestage_eval import VAL_SEEDS, score_frames
    from hmrflow.pipeline.atomic import atomic_write_text

    result: dict[str, Any] = {"note": "synthetic held-out frames (seeds never trained on), true focal length given"}
    for family, seed in VAL_SEEDS.items():
        frames = render_people_shards(cache, n, seed, size_wh, family=family, progress=False)
        result[family] = {
            mode: score_frames(model, frames, body, mode=mode)
            for mode in ("adaptive", "all_low", "all_high", "discard_background")
        }
        log.info("validation %s: %s", family, json.dumps(result[family]["adaptive"]))
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result
