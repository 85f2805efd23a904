"""Single synthetic frames with per-person instance maps, for training and scoring detectors.

Built on the synthetic world of :mod:`hmrflow.jobs.synth` (scene sampling, ground placement,
backgrounds) and the rasteriser of :mod:`hmrflow.stages.render`; it renders only the few
frames it needs from each sampled scene and keeps what a clip's video cannot give: the
instance map (which person owns each pixel), hence exact person masks.

Two scenario families are named like the benchmark sets: ``easy`` (1-2 people, near, no
pillars) and ``crowded`` (4-6 people, crossing paths, pillars, far and near); ``mixed``
draws either, plus everything in between, for training.  ``overlap`` is for training the
detector to separate people who overlap in the image: crowded-like scenes where some
walkers get a companion walking behind or beside them (:func:`add_companions`), and the
frames taken from each scene are those where people overlap most (:func:`overlap_frames`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hmrflow.jobs.synth.backgrounds import render_backgrounds, sample_backgrounds
from hmrflow.jobs.synth.clip import (
    COVERAGE_MARGIN,
    NEAR,
    BodyAssets,
    ClipGroundTruth,
    load_body_assets,
    place_people,
)
from hmrflow.jobs.synth.scene import Person, Scene, SceneSpec, sample_betas, sample_scene
from hmrflow.jobs.synth.world import box_mesh
from hmrflow.pipeline.atomic import atomic_write_bytes
from hmrflow.pipeline.boxes import box_iou, project_box
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.stages.render.raster import rasterize

log = logging.getLogger(__name__)

#: Most people a rendered frame can hold (padding size of the per-frame arrays).
MAX_PEOPLE = 8
KINDS = ("easy", "crowded", "mixed", "overlap")
#: Two people whose approximate boxes overlap at least this much make a frame an ``overlap`` frame.
OVERLAP_FRAME_IOU = 0.25


class FrameArrays:
    """Save, load and concatenate for frozen dataclasses of per-frame arrays (first dimension =
    frames), written as one uncompressed .npz with a key per field."""

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def save(self, path: str | Path) -> None:
        """Write an uncompressed .npz (atomically)."""
        buf = io.BytesIO()
        np.savez(buf, **{f: getattr(self, f) for f in self._names()})
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Any:
        with np.load(path) as z:
            return cls(**{f: z[f] for f in cls._names()})

    @classmethod
    def cat(cls, parts: list) -> Any:
        return cls(**{f: np.concatenate([getattr(q, f) for q in parts]) for f in cls._names()})

    def __len__(self) -> int:
        return int(getattr(self, self._names()[0]).shape[0])


@dataclass(frozen=True)
class DetectionFrames(FrameArrays):
    """Rendered frames with their people.

    images: (N, H, W, 3) uint8 RGB.
    instance: (N, H, W) int8 person column owning each pixel, -1 for background/pillars.
    boxes: (N, MAX_PEOPLE, 4) float32 xyxy extents of the visible pixels (NaN: no person /
        not visible), pixel convention of docs/FORMATS.md (``min - 0.5 .. max + 0.5``).
    visible_frac: (N, MAX_PEOPLE) float32 as in gt.npz (0 for padding).
    scene_seed: (N,) int64 seed of the scene each frame comes from (to keep sets disjoint).
    """

    images: np.ndarray
    instance: np.ndarray
    boxes: np.ndarray
    visible_frac: np.ndarray
    scene_seed: np.ndarray


def scene_spec_for(kind: str, rng: np.random.Generator, seed: int, width: int, height: int) -> SceneSpec:
    """A random :class:`SceneSpec` of one scenario family (``easy``, ``crowded``, ``mixed``)."""
    if kind == "mixed":
        kind = str(rng.choice(["easy", "crowded", "between"], p=[0.3, 0.4, 0.3]))
    common = dict(
        name=f"det{seed}",
        seed=int(seed),
        seconds=1.5,
        fps=10.0,
        width=width,
        height=height,
        camera=str(rng.choice(["static", "pan", "dolly"])),
        noise=float(rng.uniform(0.5, 3.0)),
    )
    if kind == "easy":
        return SceneSpec(people=int(rng.integers(1, 3)), height_frac=(0.3, 0.6), walkers=0.5, occluders=0, **common)
    if kind == "crowded":
        return SceneSpec(
            people=int(rng.integers(4, 7)),
            height_frac=(0.15, 0.6),
            walkers=0.7,
            crossing=True,
            occluders=int(rng.integers(1, 3)),
            **common,
        )
    if kind == "between":
        lo = float(rng.uniform(0.1, 0.4))
        return SceneSpec(
            people=int(rng.integers(1, 7)),
            height_frac=(lo, lo + float(rng.uniform(0.1, 0.5))),
            walkers=float(rng.uniform(0, 1)),
            crossing=bool(rng.integers(2)),
            occluders=int(rng.integers(0, 3)),
            **common,
        )
    if kind == "overlap":
        # 4 s at 4 fps instead of 1.5 s: crossing walkers meet mid-clip, which a 1.5 s
        # scene rarely reaches; overlap_frames then picks the frames where they do
        lo = float(rng.uniform(0.15, 0.4))
        return SceneSpec(
            people=int(rng.integers(2, 6)),
            height_frac=(lo, lo + float(rng.uniform(0.15, 0.4))),
            walkers=float(rng.uniform(0.6, 1.0)),
            crossing=bool(rng.random() < 0.7),
            occluders=int(rng.integers(0, 2)),
            **{**common, "seconds": 4.0, "fps": 4.0},
        )
    raise ValueError(f"unknown scenario kind {kind!r}; choose one of {KINDS}")


def add_companions(scene: Scene, rng: np.random.Generator, n: int) -> Scene:
    """The scene with up to ``n`` extra people, each following a walker of the scene.

    A companion repeats its leader's motion a few frames later (0-5), shifted by up to
    0.7 m sideways and 0.3-2 m in depth (in front or behind), with its own shape and
    colours: people walking in a group or one behind the other, who overlap in the image
    for much of the clip.  Scenes without walkers come back unchanged.
    """
    from hmrflow.stages.render.shading import sample_palette

    walkers = [q for q in scene.people if q.role != "idle"]
    people = list(scene.people)
    for _ in range(min(n, MAX_PEOPLE - len(people)) if walkers else 0):
        lead = walkers[int(rng.integers(len(walkers)))]
        lag = int(rng.integers(0, 6))
        idx = np.clip(np.arange(len(lead.trans)) - lag, 0, None)
        shift = np.array([rng.uniform(-0.7, 0.7), 0.0, rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 2.0)], np.float32)
        people.append(
            Person(
                len(people),
                sample_betas(rng),
                sample_palette(rng),
                lead.poses[idx].copy(),
                (lead.trans[idx] + shift).astype(np.float32),
                "walker",
            )
        )
    return dataclasses.replace(scene, people=people)


def approx_person_boxes(scene: Scene, world_transl: np.ndarray) -> np.ndarray:
    """Cheap image boxes of every person in every frame, without rendering or occlusion.

    Each person is taken as an upright 0.5 x 1.75 x 0.3 m block standing on the ground at
    its root position.  world_transl: (F, P, 3) ground-placed translations (y up) ->
    (F, P, 4) xyxy pixels (NaN when out of view).
    """
    corners = np.array(
        [[x, y, z] for x in (-0.25, 0.25) for y in (0.0, 1.75) for z in (-0.15, 0.15)], np.float64
    )  # (8, 3)
    pts = world_transl.astype(np.float64)[:, :, None, :] * np.array([1.0, 0.0, 1.0]) + corners  # (F, P, 8, 3)
    cam = np.einsum("fij,fpvj->fpvi", scene.cam_R, pts) + scene.cam_t[:, None, None, :]
    return project_box(cam, scene.K, scene.spec.width, scene.spec.height)


def overlap_frames(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` frame indices, frames where two people overlap first.

    boxes: (F, P, 4) per-frame person boxes (NaN = absent).  Frames with a pair of boxes at
    IoU >= :data:`OVERLAP_FRAME_IOU` are drawn at random (no repeats), then other frames fill
    up to ``k``.  Returns (k,) sorted int64.
    """
    n = boxes.shape[0]
    has = np.zeros(n, bool)
    for f in range(n):
        iou = box_iou(boxes[f], boxes[f])
        np.fill_diagonal(iou, 0.0)
        has[f] = bool((iou >= OVERLAP_FRAME_IOU).any())
    first, rest = rng.permutation(np.nonzero(has)[0]), rng.permutation(np.nonzero(~has)[0])
    return np.sort(np.concatenate([first, rest])[:k]).astype(np.int64)


def render_scene_frames(
    spec: SceneSpec,
    frames: np.ndarray,
    body: BodyAssets,
    scene: Scene | None = None,
    gt: ClipGroundTruth | None = None,
) -> DetectionFrames:
    """Render the given frame indices of the scene sampled from ``spec`` (one rasteriser call).

    ``scene``: an already sampled (and possibly edited) scene of ``spec`` to render instead;
    ``gt``: its people already placed (:func:`place_people` of that scene), not placed again.
    """
    scene = scene if scene is not None else sample_scene(spec)
    gt = gt if gt is not None else place_people(scene, body)
    p, H, W = len(scene.people), spec.height, spec.width
    frames = np.asarray(frames, np.int64)
    c = len(frames)
    K = torch.from_numpy(scene.K).float()
    R = torch.from_numpy(scene.cam_R[frames]).float()
    t = torch.from_numpy(scene.cam_t[frames]).float()
    occ = [box_mesh(o.centre_xz, o.size, o.yaw) for o in scene.occluders]
    n_inst = p + len(occ)
    verts, faces, inst, cols, vimg = [], [], [], [], []
    nv_total = 0
    if p:
        rot = axis_angle_to_matrix(torch.from_numpy(gt.world_poses[frames]).reshape(c * p, 24, 3))
        with torch.no_grad():
            out = body.model(
                rot,
                torch.from_numpy(gt.betas).repeat(c, 1),
                torch.from_numpy(gt.world_transl[frames]).reshape(c * p, 3),
            )
        nvb = out.vertices.shape[1]
        vc = torch.einsum("cij,cvj->cvi", R, out.vertices.reshape(c, p * nvb, 3)) + t[:, None]
        verts.append(vc.reshape(-1, 3))
        vimg.append(torch.arange(c).repeat_interleave(p * nvb))
        offs = (torch.arange(c * p) * nvb)[:, None, None]
        nfb = body.faces.shape[0]
        faces.append((body.faces[None] + offs).reshape(-1, 3))
        inst.append((torch.arange(c)[:, None] * n_inst + torch.arange(p)[None]).reshape(-1).repeat_interleave(nfb))
        pcols = torch.cat([torch.from_numpy(q.palette).float()[body.part_labels] for q in scene.people])
        cols.append(pcols.repeat(c, 1))
        nv_total = c * p * nvb
    if occ:
        ov0 = torch.from_numpy(np.concatenate([v for v, _ in occ])).float()
        of0 = torch.from_numpy(np.concatenate([f + 8 * i for i, (_, f) in enumerate(occ)]))
        nvo = ov0.shape[0]
        ov = torch.einsum("cij,vj->cvi", R, ov0) + t[:, None]
        verts.append(ov.reshape(-1, 3))
        vimg.append(torch.arange(c).repeat_interleave(nvo))
        faces.append((of0[None] + nv_total + (torch.arange(c) * nvo)[:, None, None]).reshape(-1, 3))
        occ_inst = torch.from_numpy(np.repeat(np.arange(len(occ)) + p, 12))
        inst.append((torch.arange(c)[:, None] * n_inst + occ_inst[None]).reshape(-1))
        cols.append(torch.tensor([o.color for o in scene.occluders]).float().repeat_interleave(12, 0).repeat(c, 1))
    bank = sample_backgrounds(np.random.default_rng(scene.background_seed), 1, wall_radius=scene.wall_radius)
    bg = render_backgrounds(bank, K, R, t, H, W)
    boxes = np.full((c, MAX_PEOPLE, 4), np.nan, np.float32)
    visible = np.zeros((c, MAX_PEOPLE), np.float32)
    if verts:
        light_w = torch.tensor(scene.light.direction).float()
        ras = rasterize(
            torch.cat(verts),
            torch.cat(faces),
            K,
            H,
            W,
            vert_image=torch.cat(vimg),
            n_images=c,
            face_instance=torch.cat(inst),
            n_instances=c * n_inst,
            face_colors=torch.cat(cols),
            light_dir=torch.einsum("cij,j->ci", R, light_w),
            light_color=torch.tensor(scene.light.color),
            ambient=torch.tensor(scene.light.ambient),
            near=NEAR,
            cull_backfaces=True,
            coverage_margin=COVERAGE_MARGIN if p else None,
        )
        local = torch.where(ras.instance >= 0, ras.instance % n_inst, ras.instance)
        img = torch.where((local >= 0)[..., None], ras.rgb, bg)
        person = torch.where(local < p, local, torch.full_like(local, -1))
        if p:
            alone = ras.coverage.reshape(c, n_inst)[:, :p].numpy().astype(np.float64)
            for i in range(c):
                for k in range(min(p, MAX_PEOPLE)):
                    ys, xs = np.nonzero(person[i].numpy() == k)
                    if len(xs):
                        boxes[i, k] = (xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5)
                        visible[i, k] = len(xs) / max(alone[i, k], 1.0)
    else:
        img = bg
        person = torch.full((c, H, W), -1, dtype=torch.int64)
    noise_rng = torch.Generator().manual_seed(int(spec.seed) * 7919 + 3)
    img = img * 255.0 + torch.randn(img.shape, generator=noise_rng) * spec.noise
    return DetectionFrames(
        images=img.round().clamp(0, 255).to(torch.uint8).numpy(),
        instance=person.clamp(max=MAX_PEOPLE - 1).to(torch.int8).numpy()
        if p <= MAX_PEOPLE
        else person.to(torch.int8).numpy(),
        boxes=boxes,
        visible_frac=visible,
        scene_seed=np.full(c, spec.seed, np.int64),
    )


def render_detection_frames(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (320, 240),
    kind: str = "mixed",
    frames_per_scene: int = 3,
    body: BodyAssets | None = None,
    progress: bool = False,
) -> DetectionFrames:
    """``n`` frames from random scenes of one scenario family.

    Args:
        rng: seeds the scenes (a scene's seed is drawn from it, so sets are reproducible).
        n: number of frames.
        size: (width, height) in pixels (even numbers).
        kind: ``easy``, ``crowded``, ``mixed`` or ``overlap``.
        frames_per_scene: frames taken (evenly spaced, random phase) from each scene.
        body: preloaded body assets (default: the synthetic body model).
    """
    from tqdm.auto import tqdm

    body = body or load_body_assets("synthetic")
    parts: list[DetectionFrames] = []
    got = 0
    bar = tqdm(total=n, desc=f"render {kind}", unit="frame", disable=not progress, leave=False)
    while got < n:
        seed = int(rng.integers(0, 2**31 - 1))
        spec = scene_spec_for(kind, rng, seed, size[0], size[1])
        k = min(frames_per_scene, n - got, spec.n_frames)
        if kind == "overlap":
            scene = add_companions(sample_scene(spec), rng, int(rng.integers(1, 3)))
            idx = overlap_frames(approx_person_boxes(scene, place_people(scene, body).world_transl), k, rng)
            parts.append(render_scene_frames(spec, idx, body, scene=scene))
        else:
            step = spec.n_frames // k
            idx = (int(rng.integers(0, step)) + step * np.arange(k)).clip(0, spec.n_frames - 1)
            parts.append(render_scene_frames(spec, idx, body))
        got += k
        bar.update(k)
    bar.close()
    return DetectionFrames.cat(parts)


def render_shards(
    out_dir: str | Path,
    kind: str,
    n: int,
    seed: int,
    size: tuple[int, int] = (320, 240),
    shard: int = 100,
    frames_per_scene: int = 3,
    progress: bool = True,
) -> DetectionFrames:
    """Render (or reuse) ``n`` frames as shard files ``<kind>_s<seed>_<i>.npz`` and return them all.

    Shard ``i`` is rendered from ``default_rng([seed, i])``, so an interrupted run resumes
    where it stopped and gives the same frames.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body: BodyAssets | None = None
    parts = []
    n_shards = -(-n // shard)
    for i in tqdm(range(n_shards), desc=f"{kind} frames", unit="shard", disable=not progress):
        path = out / f"{kind}_s{seed}_{size[0]}x{size[1]}_{i:03d}.npz"
        if path.is_file():
            parts.append(DetectionFrames.load(path))
            continue
        body = body or load_body_assets("synthetic")
        part = render_detection_frames(
            np.random.default_rng([seed, i]), min(shard, n - i * shard), size, kind, frames_per_scene, body
        )
        part.save(path)
        parts.append(part)
    return DetectionFrames.cat(parts)


def bench_frames(
    name: str,
    out_dir: str | Path,
    frames_per_clip: int = 10,
    body: BodyAssets | None = None,
    progress: bool = True,
    seed: int | None = None,
    n_clips: int | None = None,
) -> DetectionFrames:
    """Frames of a named benchmark set (``configs/bench/<name>.yaml``), evenly spaced in each clip.

    The scenes are exactly the set's clips (same specs and seeds as ``hmrflow synth --bench``);
    only ``frames_per_clip`` frames of each are rendered.  ``seed`` / ``n_clips`` replace the
    set's base seed and clip count (as in :func:`~hmrflow.jobs.synth.bench_sets.load_bench_set`).  Cached as
    ``bench_<name>_<k>.npz`` (``bench_<name>_s<seed>_c<n_clips>_<k>.npz`` with overrides).
    """
    from tqdm.auto import tqdm

    from hmrflow.jobs.synth.bench_sets import load_bench_set

    tag = "" if seed is None and n_clips is None else f"_s{seed}_c{n_clips}"
    path = Path(out_dir) / f"bench_{name}{tag}_{frames_per_clip}.npz"
    if path.is_file():
        return DetectionFrames.load(path)
    parts = []
    for spec in tqdm(load_bench_set(name, n_clips, seed=seed), desc=f"bench {name}", unit="clip", disable=not progress):
        body = body or load_body_assets(spec.body_model)
        idx = np.linspace(0, spec.n_frames - 1, frames_per_clip).round().astype(np.int64)
        parts.append(render_scene_frames(spec, idx, body))
    data = DetectionFrames.cat(parts)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    data.save(path)
    return data
