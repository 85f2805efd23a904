"""Calibration sets for ECLM (:mod:`hmrflow.stages.mesh.accel.eclm`) and its report.

A calibration set is crops with 3D ground-truth joints (and, for synthetic crops, the
person coverage of every token cell, so Mask-ToMe can be measured on the same set):

* :func:`synthetic_calibration` renders crops like the estimator's training crops;
* :func:`gt_dir_calibration` cuts them from a folder in the ground-truth format
  (``<clip>/gt.npz`` + ``<clip>.mp4``, docs/FORMATS.md).

Used by ``hmrflow accelerate`` and ``hmrflow bench estimator``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

#: seeds of the synthetic sets (calibration and the benchmark's held-out accuracy set differ)
CALIB_SEED = 1000
HELDOUT_SEED = 2000


def _token_coverage(masks, token_grid: tuple[int, int]):
    """Pixel masks (N, H, W) bool -> person coverage per token cell (N, gh, gw) float32."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(masks).float()[:, None]
    return F.adaptive_avg_pool2d(m, token_grid)[:, 0]


def synthetic_calibration(
    n: int, image_size: tuple[int, int], token_grid: tuple[int, int], seed: int, cache: Optional[Path] = None
):
    """A synthetic set of ``n`` single-person crops with GT joints and token masks, rendered like the
    estimator's training crops (:func:`hmrflow.jobs.train.estimator_data.render_crops`, chunks of
    64 from streams ``default_rng([seed, i])``; the training data uses seed 0 and its validation
    seed 900001).
    Joints are in the frame of the ray through the crop centre, as the estimator predicts them."""
    import numpy as np
    import torch

    from hmrflow.stages.mesh.accel.eclm import CalibrationSet
    from hmrflow.stages.mesh.crop import normalise_uint8

    file = None
    if cache is not None:
        file = Path(cache) / f"calib_train64_{seed}_{n}_{image_size[0]}x{image_size[1]}.npz"
        if file.exists():
            d = dict(np.load(file))
            return CalibrationSet(
                normalise_uint8(d["images"]), torch.from_numpy(d["joints3d"]), _token_coverage(d["masks"], token_grid)
            )
    from hmrflow.jobs.train.estimator_data import CropSet, render_crops

    log.info("rendering %d synthetic calibration crops (seed %d)", n, seed)
    from hmrflow.stages.mesh.train import make_batch

    # chunks of 64 crops, each from its own stream: every chunk draws its own background images,
    # so a set is not dominated by a handful of backgrounds
    parts = [
        render_crops(np.random.default_rng([seed, i]), min(64, n - s), image_size, with_masks=True)
        for i, s in enumerate(range(0, n, 64))
    ]
    crops = CropSet.cat([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    # joints in the frame of the ray through the crop centre: what the estimator predicts from a crop
    _, targets = make_batch(crops, np.arange(n), augment=False, ray_frame=True)
    d = {"images": crops.images, "joints3d": targets.joints3d.numpy(), "masks": masks}
    if file is not None:
        from hmrflow.pipeline.atomic import atomic_path

        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, images=d["images"], joints3d=d["joints3d"], masks=d["masks"])
    return CalibrationSet(
        normalise_uint8(d["images"]), torch.from_numpy(d["joints3d"]).float(), _token_coverage(d["masks"], token_grid)
    )


def gt_dir_calibration(
    folder: Path,
    image_size: tuple[int, int],
    token_grid: tuple[int, int],
    max_crops: int = 256,
    min_visible: float = 0.5,
):
    """Crops of the people in a ground-truth folder (``<clip>/gt.npz`` + ``<clip>.mp4``) with
    visible fraction >= ``min_visible``, evenly subsampled to ``max_crops``.  No token masks
    (the format has none), so Mask-ToMe accuracy is not measured on such sets."""
    import av
    import numpy as np
    import torch

    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.stages.mesh.accel.eclm import CalibrationSet
    from hmrflow.stages.mesh.crop import make_crops

    folder = Path(folder)
    clips = sorted(p.parent for p in folder.glob("*/gt.npz"))
    if not clips:
        raise ConfigError(f"{folder}: no <clip>/gt.npz found (expected the synthetic ground-truth format)")
    wanted = []  # (clip, frame, person)
    for clip in clips:
        gt = np.load(clip / "gt.npz")
        ok = gt["in_frame"] & (gt["visible_frac"] >= min_visible) & np.isfinite(gt["boxes"]).all(-1)
        wanted += [(clip, int(f), int(p)) for f, p in zip(*np.nonzero(ok))]
    if not wanted:
        raise ConfigError(f"{folder}: no visible people in the ground truth")
    keep = np.linspace(0, len(wanted) - 1, min(max_crops, len(wanted))).round().astype(int)
    wanted = [wanted[i] for i in sorted(set(keep.tolist()))]
    images, joints = [], []
    for clip in sorted({w[0] for w in wanted}):
        gt = np.load(clip / "gt.npz")
        rows = [(f, p) for c, f, p in wanted if c == clip]
        frames_needed = sorted({f for f, _ in rows})
        video = clip / f"{clip.name}.mp4"
        frames = {}
        with av.open(str(video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in frames_needed:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= frames_needed[-1]:
                    break
        rows = [(f, p) for f, p in rows if f in frames]
        order = sorted(frames)
        stack = np.stack([frames[i] for i in order])
        idx = np.array([order.index(f) for f, _ in rows])
        boxes = np.stack([gt["boxes"][f, p] for f, p in rows])
        crops = make_crops(stack, idx, boxes, crop_hw=image_size, token_grid=token_grid)
        images.append(crops.images)
        joints.append(torch.from_numpy(np.stack([gt["joints3d"][f, p] for f, p in rows])).float())
    return CalibrationSet(torch.cat(images), torch.cat(joints))


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """``<out>.report.json`` and ``<out>.report.md``."""
    from hmrflow.pipeline.atomic import atomic_write_bytes

    jpath = out.with_name(out.stem + ".report.json")
    mpath = out.with_name(out.stem + ".report.md")
    atomic_write_bytes(jpath, json.dumps(report, indent=2).encode())
    r = report
    lines = [
        f"# ECLM report: {r['weights']}",
        "",
        f"budget: +{r['eps_mm']} mm {r['metric']} on {r['calibration']['n']} calibration crops ({r['calibration']['source']})",
        "",
        f"depth {r['base_depth']} -> {r['final_depth']}; merged groups {r['plan']['groups']}",
        "",
        f"GFLOPs per crop {r['flops']['baseline']['total'] / 1e9:.3f} -> {r['flops']['merged']['total'] / 1e9:.3f}",
        "",
        "| step | blocks | CKA | MPJPE mm | PA-MPJPE mm | increase mm | accepted |",
        "|---|---|---|---|---|---|---|",
        f"| baseline | - | - | {r['baseline']['mpjpe_mm']:.2f} | {r['baseline']['pa_mpjpe_mm']:.2f} | 0 | - |",
    ]
    for i, s in enumerate(r["steps"], 1):
        lines.append(
            f"| {i} | {s['group'][0]}..{s['group'][1]} | {s['cka']:.3f} | {s['mpjpe_mm']:.2f} | "
            f"{s['pa_mpjpe_mm']:.2f} | {s['increase_mm']:+.2f} | {'yes' if s['accepted'] else 'no'} |"
        )
    atomic_write_bytes(mpath, ("\n".join(lines) + "\n").encode())
    return jpath, mpath
