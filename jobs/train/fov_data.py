"""Rendered frames with a random field of view and camera tilt, for the camera network
(:mod:`hmrflow.stages.camera.fov`).

Each scene is drawn like the detector's ``mixed`` family (1-6 people, static, panning or
dollying camera) at 4:3 or 16:9, with the vertical field of view uniform in ``VFOV_RANGE``;
the camera is then tilted by an extra pitch uniform in ``PITCH_RANGE_DEG`` (positive turns
the camera up; with the scenes' own downward look of 0-16 degrees this spans about 26
degrees down to 30 up) and a roll of ``ROLL_STD_DEG`` (clipped at twice that) about its own
axes.  A few
frames per scene are rendered and stored at the network's input size
(:data:`hmrflow.stages.camera.fov.INPUT_HW`, area-resampled like the stage does), so the
data set is small: ``images`` (N, h, w, 3) uint8, ``focal_rel`` (N,) fy / image height,
``up`` (N, 3) the world's up direction in the camera frame, ``aspect`` (N,) width / height,
``scene_seed`` (N,).
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
#: Extra camera pitch (degrees, positive turns the camera up) and roll spread added to each scene.
PITCH_RANGE_DEG = (-10.0, 30.0)
ROLL_STD_DEG = 3.0


def tilt(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) a random extra camera rotation (pitch then roll, in the camera frame)."""
    from scipy.spatial.transform import Rotation

    pitch = math.radians(rng.uniform(*PITCH_RANGE_DEG))
    roll = math.radians(float(np.clip(rng.normal(0.0, ROLL_STD_DEG), -2 * ROLL_STD_DEG, 2 * ROLL_STD_DEG)))
    # OpenCV camera: x right, y down; turning the world by -pitch about x turns the camera up
    return Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix() @ Rotation.from_rotvec([-pitch, 0.0, 0.0]).as_matrix()


def render_fov_frames(rng: np.random.Generator, n: int, frames_per_scene: int = 2) -> dict[str, np.ndarray]:
    """``n`` frames of random scenes with random fields of view (see the module docstring)."""
    from tqdm.auto import tqdm

    from hmrflow.jobs.synth.clip import load_body_assets
    from hmrflow.jobs.synth.scene import sample_scene
    from hmrflow.jobs.train.synth_frames import render_scene_frames, scene_spec_for
    from hmrflow.stages.camera.fov import resize_for_fov

    body = load_body_assets("synthetic")
    images, focal, aspect, seeds, ups = [], [], [], [], []
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
            scene = sample_scene(spec)
            extra = tilt(rng)
            scene = dataclasses.replace(
                scene, cam_R=np.einsum("ij,fjk->fik", extra, scene.cam_R), cam_t=scene.cam_t @ extra.T
            )
            part = render_scene_frames(spec, idx, body, scene=scene)
            for img, f in zip(part.images, idx):
                images.append(resize_for_fov(img))
                focal.append(0.5 / math.tan(math.radians(vfov) / 2))
                aspect.append(w / h)
                seeds.append(seed)
                ups.append(scene.cam_R[f] @ np.array([0.0, 1.0, 0.0]))
            got += k
            bar.update(k)
    return {
        "images": np.stack(images),
        "focal_rel": np.asarray(focal, np.float32),
        "up": np.asarray(ups, np.float32),
        "aspect": np.asarray(aspect, np.float32),
        "scene_seed": np.asarray(seeds, np.int64),
    }


def render_fov_shards(out_dir: str | Path, n: int, seed: int, shard: int = 200) -> dict[str, np.ndarray]:
    """Render (or reuse) ``n`` frames as shards ``cam_s<seed>_<i>.npz``; shard i uses ``default_rng([seed, i])``."""
    from hmrflow.pipeline.atomic import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(-(-n // shard)):
        path = out / f"cam_s{seed}_{i:03d}.npz"
        if not path.is_file():
            part = render_fov_frames(np.random.default_rng([seed, i]), min(shard, n - i * shard))
            buf = io.BytesIO()
            np.savez(buf, **part)
            atomic_write_bytes(path, buf.getvalue())
            log.info("rendered %s", path)
        with np.load(path) as z:
            parts.append({k: z[k] for k in z.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
