"""Person crops with exact SMPL ground truth, rendered from the synthetic world, for the estimator.

Each sample is one person posed by the procedural motion library (:mod:`hmrflow.priors.motion_library`),
shaped by random betas, standing upright in a y-up world seen by a pinhole camera with random
field of view, pitch and height, at a random place of a virtual full image (640 x 480 by default)
and an apparent height of ``height_frac`` of the image.  The person's box (extent of the
projected mesh, jittered like a detector box) gives the crop box exactly as the estimate stage
makes it (:func:`hmrflow.stages.mesh.crop.crop_boxes_from_xyxy`, rescale 1.2), and the crop is
rendered *directly* at the network resolution with the crop camera's intrinsics (no full frame
is rendered), over the procedural ground/wall/sky background of :mod:`hmrflow.jobs.synth`.

Coordinates: image points use the crop module's continuous convention (pixel (i, j) covers
[j, j+1) x [i, i+1)); the full camera's principal point is the image centre (W/2, H/2).
``joints2d`` are crop-normalised, ``(u - centre) / size`` (about -0.5..0.5 vertically), the
frame in which a weak-perspective ``(s, tx, ty)`` puts a body point X at ``s (X_xy + t_xy) / 2``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from hmrflow.jobs.synth.backgrounds import render_backgrounds, sample_backgrounds
from hmrflow.jobs.synth.clip import NEAR, BodyAssets, load_body_assets
from hmrflow.jobs.synth.scene import sample_betas, sample_light
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.stages.mesh.crop import crop_boxes_from_xyxy
from hmrflow.stages.render.raster import rasterize
from hmrflow.stages.render.shading import sample_palette

log = logging.getLogger(__name__)

#: The virtual full image (W, H) the people are placed in.
FULL_WH = (640, 480)
#: Box context factor of the estimate stage (crop.DEFAULT_RESCALE).
RESCALE = 1.2


@dataclass
class CropSet:
    """N rendered person crops and their ground truth (all NumPy).

    images: (N, h, w, 3) uint8 RGB crops.
    rotmats: (N, 24, 3, 3) float32, joint 0 = global orientation in the camera frame.
    betas: (N, 10) float32.
    joints3d: (N, 24, 3) float32 camera-frame joints (metres).
    joints2d: (N, 24, 2) float32 crop-normalised projected joints (see module docstring).
    cam_t: (N, 3) float32 SMPL translation in the camera frame.
    center: (N, 2) float32 crop centre, size: (N,) crop height b (full-image pixels).
    focal: (N,) float32 focal length of the full camera (pixels).
    height_frac: (N,) float32 projected body height / image height.
    """

    images: np.ndarray
    rotmats: np.ndarray
    betas: np.ndarray
    joints3d: np.ndarray
    joints2d: np.ndarray
    cam_t: np.ndarray
    center: np.ndarray
    size: np.ndarray
    focal: np.ndarray
    height_frac: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, idx: np.ndarray | slice) -> "CropSet":
        return CropSet(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def cat(cls, parts: list["CropSet"]) -> "CropSet":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def save(self, folder: str | Path) -> None:
        """One ``.npy`` per field in ``folder`` (images can then be memory-mapped)."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        for f in fields(self):
            tmp = d / f".{f.name}.tmp.npy"
            np.save(tmp, getattr(self, f.name))
            tmp.replace(d / f"{f.name}.npy")

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "CropSet":
        d = Path(folder)
        return cls(
            **{
                f.name: np.load(d / f"{f.name}.npy", mmap_mode="r" if (mmap and f.name == "images") else None)
                for f in fields(cls)
            }
        )


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _sample_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 24, 3) axis-angle poses (world y-up root) from random motion-library clips."""
    from hmrflow.priors import motion_library as ml

    names = list(ml.MOTIONS)
    out = []
    while sum(len(o) for o in out) < n:
        name = names[int(rng.integers(len(names)))]
        kw = ml.random_params(name, rng)
        m = ml.MOTIONS[name](rng, 3.0, 10.0, **kw)
        k = min(8, n - sum(len(o) for o in out))
        out.append(np.asarray(m.poses, np.float32).reshape(m.poses.shape[0], 24, 3)[rng.integers(0, m.n_frames, k)])
    return np.concatenate(out)[:n]


def render_crops(
    rng: np.random.Generator,
    n: int,
    crop_hw: tuple[int, int] = (128, 96),
    height_frac: tuple[float, float] = (0.15, 0.8),
    box_jitter: float = 0.06,
    body: BodyAssets | None = None,
    with_masks: bool = False,
) -> CropSet | tuple[CropSet, np.ndarray]:
    """Render ``n`` single-person crops (one rasteriser call) with their ground truth.

    Args:
        rng: source of everything (same state -> same crops).
        n: number of crops.
        crop_hw: crop (height, width) in pixels (aspect 4:3 like the estimator's input).
        height_frac: range of the body's apparent height as a fraction of the image height.
        box_jitter: std of the box centre/size noise, as a fraction of the box size
            (imitates detector boxes).
        body: preloaded body assets (default: the synthetic body model).
        with_masks: also return the person masks (n, h, w) bool (the same crops either way).
    """
    body = body or load_body_assets("synthetic")
    W, H = FULL_WH
    ch, cw = crop_hw
    poses = torch.from_numpy(_sample_poses(rng, n))
    betas = torch.from_numpy(np.stack([sample_betas(rng) for _ in range(n)]))
    rot = axis_angle_to_matrix(poses)  # (n, 24, 3, 3), root in the y-up world
    R_wc = np.empty((n, 3, 3))
    cam_pos = np.empty((n, 3))
    focal = np.empty(n)
    target = np.empty((n, 3))
    frac = rng.uniform(*height_frac, size=n)
    for i in range(n):
        pitch = math.radians(rng.uniform(-10.0, 25.0))  # positive: looking down
        # world (y up) -> camera (y down, z forward): turn 180 deg about x, then pitch
        R_wc[i] = _rot_x(pitch) @ np.diag([1.0, -1.0, -1.0])
        rot[i, 0] = torch.from_numpy(_rot_y(rng.uniform(-math.pi, math.pi))).float() @ rot[i, 0]
        focal[i] = 0.5 * H / math.tan(math.radians(rng.uniform(40.0, 70.0)) / 2)
        depth = focal[i] * 1.7 / (frac[i] * H)
        u, v = rng.uniform(0.15 * W, 0.85 * W), rng.uniform(0.3 * H, 0.7 * H)
        target[i] = ((u - W / 2) * depth / focal[i], (v - H / 2) * depth / focal[i], depth)
        cam_pos[i] = (0.0, rng.uniform(0.8, 2.5), 0.0)
    R = torch.from_numpy(R_wc).float()
    rot[:, 0] = R @ rot[:, 0]  # global orientation in the camera frame
    with torch.no_grad():
        out0 = body.model(rot, betas, torch.zeros(n, 3))
        cam_t = torch.from_numpy(target).float() - out0.joints[:, 0]  # pelvis at the target point
        verts = out0.vertices + cam_t[:, None]
        joints = out0.joints + cam_t[:, None]
    f = torch.from_numpy(focal).float()
    centre = torch.tensor([W / 2, H / 2])

    def to_image(p: torch.Tensor) -> torch.Tensor:
        return f[:, None, None] * p[..., :2] / p[..., 2:3] + centre

    vimg = to_image(verts)
    lo, hi = vimg.amin(1), vimg.amax(1)
    box_wh = hi - lo
    jit = torch.from_numpy(rng.normal(0.0, box_jitter, size=(n, 3))).float()
    c_box = (lo + hi) / 2 + jit[:, :2] * box_wh.max(-1, keepdim=True).values
    wh = box_wh * torch.exp(jit[:, 2:3])
    boxes = crop_boxes_from_xyxy(torch.cat([c_box - wh / 2, c_box + wh / 2], -1), (ch, cw), RESCALE)
    s = ch / boxes.size
    # crop camera: crop coordinate = (image - centre) * s + (cw, ch)/2; raster pixel centres on integers
    K = torch.zeros(n, 3, 3)
    K[:, 0, 0] = f * s
    K[:, 1, 1] = f * s
    K[:, 0, 2] = (W / 2 - boxes.center[:, 0]) * s + cw / 2 - 0.5
    K[:, 1, 2] = (H / 2 - boxes.center[:, 1]) * s + ch / 2 - 0.5
    K[:, 2, 2] = 1.0

    faces = body.faces
    nv, nf = verts.shape[1], faces.shape[0]
    offs = (torch.arange(n) * nv)[:, None, None]
    labels = body.part_labels
    palettes = torch.from_numpy(np.stack([sample_palette(rng) for _ in range(n)])).float()  # (n, parts, 3)
    cols = palettes[:, labels].reshape(-1, 3)
    lights = [sample_light(rng) for _ in range(n)]
    light_dir = torch.einsum("nij,nj->ni", R, torch.tensor([lt.direction for lt in lights]).float())
    ras = rasterize(
        verts.reshape(-1, 3),
        (faces[None] + offs).reshape(-1, 3),
        K,
        ch,
        cw,
        vert_image=torch.arange(n).repeat_interleave(nv),
        n_images=n,
        face_instance=torch.arange(n).repeat_interleave(nf),
        n_instances=n,
        face_colors=cols,
        light_dir=light_dir,
        light_color=torch.tensor([lt.color for lt in lights]).float(),
        ambient=torch.tensor([lt.ambient for lt in lights]).float(),
        near=NEAR,
        cull_backfaces=True,
    )
    n_bg = max(1, min(8, n // 4))
    bank = sample_backgrounds(rng, n_bg)
    t_wc = -torch.einsum("nij,nj->ni", R, torch.from_numpy(cam_pos).float())
    bg = render_backgrounds(bank, K, R, t_wc, ch, cw, index=torch.from_numpy(rng.integers(0, n_bg, n)))
    img = torch.where((ras.instance >= 0)[..., None], ras.rgb, bg)
    noise = torch.from_numpy(rng.uniform(0.5, 4.0, size=(n, 1, 1, 1))).float()
    img = (
        img * 255.0 + torch.randn(img.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * noise
    )
    j2d = (to_image(joints) - boxes.center[:, None]) / boxes.size[:, None, None]
    crops = CropSet(
        images=img.round().clamp(0, 255).to(torch.uint8).numpy(),
        rotmats=rot.numpy().astype(np.float32),
        betas=betas.numpy().astype(np.float32),
        joints3d=joints.numpy().astype(np.float32),
        joints2d=j2d.numpy().astype(np.float32),
        cam_t=cam_t.numpy().astype(np.float32),
        center=boxes.center.numpy().astype(np.float32),
        size=boxes.size.numpy().astype(np.float32),
        focal=focal.astype(np.float32),
        height_frac=((box_wh[:, 1]) / H).numpy().astype(np.float32),
    )
    return (crops, (ras.instance >= 0).numpy()) if with_masks else crops


def render_crop_cache(
    folder: str | Path,
    n: int,
    seed: int,
    crop_hw: tuple[int, int] = (128, 96),
    chunk: int = 256,
    height_frac: tuple[float, float] = (0.15, 0.8),
    progress: bool = True,
) -> CropSet:
    """Render (or reuse) ``n`` crops into ``folder`` (chunk ``i`` from ``default_rng([seed, i])``,
    kept as ``part_XXXX`` folders so an interrupted run resumes) and return them, images memory-mapped
    from one merged ``all`` folder."""
    from tqdm.auto import tqdm

    root = Path(folder)
    merged = root / "all"
    if (merged / "height_frac.npy").is_file():
        got = CropSet.load(merged)
        if len(got) == n:
            return got
    body: BodyAssets | None = None
    parts = []
    n_chunks = -(-n // chunk)
    for i in tqdm(range(n_chunks), desc=f"render crops s{seed}", unit="chunk", disable=not progress):
        part_dir = root / f"part_{i:04d}"
        if (part_dir / "height_frac.npy").is_file():
            parts.append(CropSet.load(part_dir, mmap=False))
            continue
        body = body or load_body_assets("synthetic")
        part = render_crops(
            np.random.default_rng([seed, i]), min(chunk, n - i * chunk), crop_hw, height_frac, body=body
        )
        part.save(part_dir)
        parts.append(part)
    CropSet.cat(parts).save(merged)
    return CropSet.load(merged)
