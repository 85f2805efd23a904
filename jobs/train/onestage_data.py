"""Full rendered frames with every person's SMPL body, for training the one-stage estimator.

The frames come from the synthetic world of :mod:`hmrflow.jobs.synth` through
:func:`~hmrflow.jobs.train.synth_frames.render_scene_frames` (the detector's training frames);
this module adds what a whole-image mesh estimator needs besides boxes: each person's
camera-frame SMPL parameters, 3D joints and the camera intrinsics.

Scenario families: those of :func:`~hmrflow.jobs.train.synth_frames.scene_spec_for`
(``mixed``, ``overlap``) plus ``far`` (people 5-20 % of the frame height, the case the
scale-adaptive tokens are for).  ``onestage`` draws all three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmrflow.jobs.synth.clip import BodyAssets, load_body_assets, place_people
from hmrflow.jobs.synth.scene import Scene, SceneSpec, sample_scene
from hmrflow.jobs.train.synth_frames import (
    MAX_PEOPLE,
    FrameArrays,
    add_companions,
    approx_person_boxes,
    overlap_frames,
    render_scene_frames,
    scene_spec_for,
)

log = logging.getLogger(__name__)

#: A person counts as present in a frame when at least this share of its body is visible.
MIN_VISIBLE = 0.1
FAMILIES = ("mixed", "overlap", "far")
#: Mixture of the ``onestage`` training family.
MIXTURE = {"mixed": 0.45, "overlap": 0.3, "far": 0.25}


@dataclass(frozen=True)
class PeopleFrames(FrameArrays):
    """Rendered frames with their people's bodies (padding rows have ``present`` False).

    images: (N, H, W, 3) uint8 RGB.
    boxes: (N, P, 4) float32 xyxy of the visible pixels (NaN: absent).
    visible_frac: (N, P) float32.
    present: (N, P) bool, visible enough to be a target (:data:`MIN_VISIBLE`).
    poses: (N, P, 72) float32 axis-angle, joint 0 in the camera frame.
    betas: (N, P, 10) float32.
    transl: (N, P, 3) float32 SMPL translation in the camera frame (metres).
    joints: (N, P, 24, 3) float32 camera-frame joints (metres).
    K: (N, 3, 3) float32 intrinsics.
    scene_seed: (N,) int64.
    """

    images: np.ndarray
    boxes: np.ndarray
    visible_frac: np.ndarray
    present: np.ndarray
    poses: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    joints: np.ndarray
    K: np.ndarray
    scene_seed: np.ndarray


def far_spec(rng: np.random.Generator, seed: int, width: int, height: int) -> SceneSpec:
    """Small, far people (5-20 % of the frame height), 1-5 of them, some walking."""
    lo = float(rng.uniform(0.05, 0.12))
    return SceneSpec(
        name=f"far{seed}",
        seed=int(seed),
        people=int(rng.integers(1, 6)),
        seconds=1.5,
        fps=10.0,
        width=width,
        height=height,
        camera=str(rng.choice(["static", "pan"])),
        vfov_deg=(40.0, 60.0),
        height_frac=(lo, lo + float(rng.uniform(0.03, 0.08))),
        walkers=float(rng.uniform(0.3, 0.9)),
        crossing=bool(rng.integers(2)),
        noise=float(rng.uniform(0.5, 3.0)),
    )


def render_scene_people(
    spec: SceneSpec, frames: np.ndarray, body: BodyAssets, scene: Scene | None = None
) -> PeopleFrames:
    """Render ``frames`` of the scene sampled from ``spec`` (or of the edited ``scene``) with bodies."""
    scene = scene if scene is not None else sample_scene(spec)
    gt = place_people(scene, body)
    frames = np.asarray(frames, np.int64)
    det = render_scene_frames(spec, frames, body, scene=scene, gt=gt)
    c, p = len(frames), min(len(scene.people), MAX_PEOPLE)
    poses = np.zeros((c, MAX_PEOPLE, 72), np.float32)
    betas = np.zeros((c, MAX_PEOPLE, 10), np.float32)
    transl = np.zeros((c, MAX_PEOPLE, 3), np.float32)
    joints = np.zeros((c, MAX_PEOPLE, 24, 3), np.float32)
    if p:
        poses[:, :p] = gt.poses[frames][:, :p]
        betas[:, :p] = gt.betas[None, :p]
        transl[:, :p] = gt.transl[frames][:, :p]
        with torch.no_grad():
            out = body.model.forward_axis_angle(
                torch.from_numpy(poses[:, :p].reshape(-1, 72)),
                torch.from_numpy(betas[:, :p].reshape(-1, 10)),
                torch.from_numpy(transl[:, :p].reshape(-1, 3)),
            )
        joints[:, :p] = out.joints.reshape(c, p, 24, 3).numpy()
    present = (det.visible_frac >= MIN_VISIBLE) & np.isfinite(det.boxes).all(-1)
    # a person whose pelvis is behind the camera or out of the body model's reach is not a target
    present &= joints[..., 0, 2] > 0.3
    return PeopleFrames(
        images=det.images,
        boxes=det.boxes,
        visible_frac=det.visible_frac,
        present=present,
        poses=poses,
        betas=betas,
        transl=transl,
        joints=joints,
        K=np.repeat(scene.K[None].astype(np.float32), c, 0),
        scene_seed=det.scene_seed,
    )


def render_people_frames(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (512, 384),
    family: str = "onestage",
    frames_per_scene: int = 3,
    body: BodyAssets | None = None,
) -> PeopleFrames:
    """``n`` frames of random scenes of ``family`` (``mixed``, ``overlap``, ``far`` or ``onestage``)."""
    body = body or load_body_assets("synthetic")
    parts: list[PeopleFrames] = []
    got = 0
    while got < n:
        kind = family
        if family == "onestage":
            kind = str(rng.choice(list(MIXTURE), p=list(MIXTURE.values())))
        elif family not in FAMILIES:
            raise ValueError(f"unknown scene family {family!r}; choose one of {FAMILIES + ('onestage',)}")
        seed = int(rng.integers(0, 2**31 - 1))
        spec = far_spec(rng, seed, *size) if kind == "far" else scene_spec_for(kind, rng, seed, *size)
        k = min(frames_per_scene, n - got, spec.n_frames)
        if kind == "overlap":
            companions = int(rng.integers(1, 3))
            scene = add_companions(sample_scene(spec), rng, companions)
            idx = overlap_frames(approx_person_boxes(scene, place_people(scene, body).world_transl), k, rng)
            parts.append(render_scene_people(spec, idx, body, scene=scene))
        else:
            step = spec.n_frames // k
            idx = (int(rng.integers(0, step)) + step * np.arange(k)).clip(0, spec.n_frames - 1)
            parts.append(render_scene_people(spec, idx, body))
        got += k
    return PeopleFrames.cat(parts)


def render_people_shards(
    out_dir: str | Path,
    n: int,
    seed: int,
    size: tuple[int, int] = (512, 384),
    family: str = "onestage",
    shard: int = 50,
    progress: bool = True,
) -> PeopleFrames:
    """Render (or reuse) ``n`` frames as shards ``<family>_s<seed>_<W>x<H>_<i>.npz``; shard ``i``
    comes from ``default_rng([seed, i])``, so an interrupted run resumes with the same frames."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body: BodyAssets | None = None
    parts = []
    for i in tqdm(range(-(-n // shard)), desc=f"{family} frames", unit="shard", disable=not progress):
        path = out / f"{family}_s{seed}_{size[0]}x{size[1]}_{i:03d}.npz"
        if path.is_file():
            parts.append(PeopleFrames.load(path))
            continue
        body = body or load_body_assets("synthetic")
        part = render_people_frames(np.random.default_rng([seed, i]), min(shard, n - i * shard), size, family, 3, body)
        part.save(path)
        parts.append(part)
    return PeopleFrames.cat(parts)
