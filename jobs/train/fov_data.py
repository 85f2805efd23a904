"""Rendered frames with a random field of view, for the field-of-view model (:mod:`hmrflow.stages.camera.fov`).

Each scene is drawn like the detector's ``mixed`` family (1-6 people, static, panning or
dollying camera) with the vertical field of view uniform in ``VFOV_RANGE`` and a camera
pitched down by up to ``MAX_PITCH_DEG`` more than the world's default look-at, at 4:3 or
16:9.  A few frames per scene are rendered and stored at the model's input size
(:data:`hmrflow.stages.camera.fov.INPUT_HW`, area-resampled like the stage does), so the
data set is small: ``images`` (N, h, w, 3) uint8, ``focal_rel`` (N,) fy / image height,
``aspect`` (N,) width / height, ``scene_seed`` (N,).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Vertical fields of view (degrees) the model is trained on.
VFOV_RANGE = (30.0, 90.0)
#: Sizes (width, height) frames are rendered at before resampling to the model's input.
RENDER_SIZES = ((320, 240), (384, 216))


def render_fov_frames(rng: np.random.Generator, n: int, frames_per_scene: int = 2) -> dict[str, np.ndarray]:
    """``n`` frames of random scenes with random fields of view (see the module docstring)."""
    from tqdm.auto import tqdm

    from hmrflow.jobs.synth.clip import load_body_assets
    from hmrflow.jobs.train.synth_frames import render_scene_frames, scene_spec_for
    from hmrflow.stages.camera.fov import resize_for_fov

    body = load_body_assets("synthetic")
    images, focal, aspect, seeds = [], [], [], []
    got = 0
    with tqdm(total=n, desc="fov frames", unit="frame", leave=False) as bar:
        while got < n:
            seed = int(rng.integers(0, 2**31 - 1))
            w, h = RENDER_SIZES[int(rng.integers(len(RENDER_SIZES)))]
            spec = scene_spec_for("mixed", rng, seed, w, h)
            vfov = float(rng.uniform(*VFOV_RANGE))
            spec = dataclasses.replace(spec, vfov_deg=(vfov, vfov))
            k = min(frames_per_scene, n - got)
            idx = np.sort(rng.choice(spec.n_frames, size=k, replace=False))
            part = render_scene_frames(spec, idx, body)
            for img in part.images:
                images.append(resize_for_fov(img))
                focal.append(0.5 / math.tan(math.radians(vfov) / 2))
                aspect.append(w / h)
                seeds.append(seed)
            got += k
            bar.update(k)
    return {
        "images": np.stack(images),
        "focal_rel": np.asarray(focal, np.float32),
        "aspect": np.asarray(aspect, np.float32),
        "scene_seed": np.asarray(seeds, np.int64),
    }


def render_fov_shards(out_dir: str | Path, n: int, seed: int, shard: int = 200) -> dict[str, np.ndarray]:
    """Render (or reuse) ``n`` frames as shards ``fov_s<seed>_<i>.npz``; shard i uses ``default_rng([seed, i])``."""
    from hmrflow.pipeline.atomic import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(-(-n // shard)):
        path = out / f"fov_s{seed}_{i:03d}.npz"
        if not path.is_file():
            part = render_fov_frames(np.random.default_rng([seed, i]), min(shard, n - i * shard))
            buf = io.BytesIO()
            np.savez(buf, **part)
            atomic_write_bytes(path, buf.getvalue())
            log.info("rendered %s", path)
        with np.load(path) as z:
            parts.append({k: z[k] for k in z.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
