"""Render a synthetic clip with exact ground truth: ``<name>.mp4``, ``gt.npz``, ``scene.json``.

The contract of the files is docs/FORMATS.md "Synthetic ground truth".  Frames are rendered
in chunks: the body model poses every person of every frame of a chunk in one batch, the
rasteriser draws the chunk's frames in one call (people and pillars are instances; their
coverage on a 3x-enlarged canvas gives ``visible_frac``), and the background (rendered
once for a static camera) fills the rest.

Pixel convention: pixel centres on integer coordinates (OpenCV); ``boxes`` are the pixel
extents of the visible pixels, ``[min_x - 0.5, min_y - 0.5, max_x + 0.5, max_y + 0.5]``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmrflow.jobs.synth.backgrounds import render_backgrounds, sample_backgrounds
from hmrflow.jobs.synth.scene import Scene, SceneSpec, sample_scene
from hmrflow.jobs.synth.world import box_mesh, change_frame, ground_offset_y
from hmrflow.pipeline.atomic import atomic_write_bytes, atomic_write_json
from hmrflow.pipeline.errors import ConfigError
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.stages.render.raster import project, rasterize
from hmrflow.stages.render.shading import face_part_labels

log = logging.getLogger(__name__)

NEAR = 0.05
COVERAGE_MARGIN = 1.0  # the "unbounded" image plane is approximated by a 3x3 enlarged canvas


@dataclass
class BodyAssets:
    """A body model with what the renderer derives from it once: faces and part labels."""

    model: object
    faces: torch.Tensor  # (F, 3) int64
    part_labels: torch.Tensor  # (F,) int64 index into shading.PARTS
    sha256: str


def load_body_assets(kind: str = "synthetic", path: str | None = None) -> BodyAssets:
    """Load the body model and label its faces by body part (front/back from the rest mesh)."""
    from hmrflow.priors.body_model import load_body_model

    model = load_body_model(kind=kind, path=path, gender="neutral", device="cpu")
    faces = np.asarray(model.faces, dtype=np.int64)
    weights = getattr(model, "weights", None)
    if weights is None:  # the smplx layer inside hmrflow's BodyModel
        weights = model.layer.lbs_weights
    weights = np.asarray(weights.detach().cpu() if torch.is_tensor(weights) else weights)
    with torch.no_grad():
        rest = model(torch.eye(3).expand(1, 24, 3, 3), torch.zeros(1, 10), torch.zeros(1, 3)).vertices[0].numpy()
    labels = face_part_labels(weights, faces, rest)
    return BodyAssets(model, torch.from_numpy(faces), torch.from_numpy(labels), str(getattr(model, "sha256", "")))


def _write_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """Byte-reproducible .npz (fixed zip timestamps; no pickled objects)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(arr), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    return buf.getvalue()


@dataclass
class ClipGroundTruth:
    """World-placed people of a scene and their camera-frame parameters (see gt.npz)."""

    betas: np.ndarray  # (P, 10)
    world_poses: np.ndarray  # (F, P, 72)
    world_transl: np.ndarray  # (F, P, 3)
    poses: np.ndarray  # (F, P, 72)
    transl: np.ndarray  # (F, P, 3)


def place_people(scene: Scene, body: BodyAssets) -> ClipGroundTruth:
    """Ground-place every person (constant per-person vertical offset from frame 0) and
    convert their parameters to the camera frame of every frame."""
    model = body.model
    n, p = scene.spec.n_frames, len(scene.people)
    if p == 0:
        z = np.zeros((n, 0, 72), np.float32)
        return ClipGroundTruth(
            np.zeros((0, 10), np.float32), z, np.zeros((n, 0, 3), np.float32), z, np.zeros((n, 0, 3), np.float32)
        )
    betas = torch.from_numpy(np.stack([q.betas for q in scene.people])).float()
    poses = torch.from_numpy(np.stack([q.poses for q in scene.people], 1)).float()  # (F, P, 24, 3)
    trans = torch.from_numpy(np.stack([q.trans for q in scene.people], 1)).float()  # (F, P, 3)
    dy = ground_offset_y(model, poses[0], betas, trans[0])
    trans = trans.clone()
    trans[..., 1] += dy[None, :]
    with torch.no_grad():
        j0 = model.rest_joints(betas)[:, 0]  # (P, 3)
    R = torch.from_numpy(scene.cam_R).float()[:, None]  # (F, 1, 3, 3)
    t = torch.from_numpy(scene.cam_t).float()[:, None]
    root_c, transl_c = change_frame(poses[:, :, 0], trans, j0[None], R, t)
    poses_c = poses.clone()
    poses_c[:, :, 0] = root_c
    return ClipGroundTruth(
        betas.numpy(),
        poses.reshape(n, p, 72).numpy(),
        trans.numpy(),
        poses_c.reshape(n, p, 72).numpy(),
        transl_c.numpy().astype(np.float32),
    )


class VideoWriter:
    """H.264 (yuv420p) mp4 writer over PyAV."""

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int = 18) -> None:
        import fractions

        import av

        self._av = av
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, frames: np.ndarray) -> None:
        """(N, H, W, 3) uint8 RGB frames."""
        for f in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for pkt in self.stream.encode(frame):
                self.container.mux(pkt)

    def close(self) -> None:
        for pkt in self.stream.encode():
            self.container.mux(pkt)
        self.container.close()


def render_clip(
    spec: SceneSpec, out_dir: str | Path, body: BodyAssets | None = None, chunk: int = 8, progress: bool = True
) -> Path:
    """Render one clip into ``out_dir/<spec.name>/`` and return that folder.

    Args:
        spec: scenario knobs (``spec.seed`` makes it reproducible).
        out_dir: the set folder.
        body: preloaded body assets (default: load ``spec.body_model``).
        chunk: frames rendered per rasteriser call.
        progress: show a tqdm bar.
    """
    body = body or load_body_assets(spec.body_model)
    return render_scene(sample_scene(spec), out_dir, body, chunk=chunk, progress=progress)


def render_scene(scene: Scene, out_dir: str | Path, body: BodyAssets, chunk: int = 8, progress: bool = True) -> Path:
    """Render an already sampled (or hand-made) scene; see :func:`render_clip`."""
    from tqdm import tqdm

    spec = scene.spec
    if spec.width % 2 or spec.height % 2:
        raise ConfigError(
            f"scene {spec.name!r}: width and height must be even for yuv420p, got {spec.width}x{spec.height}"
        )
    gt = place_people(scene, body)
    clip_dir = Path(out_dir) / spec.name
    clip_dir.mkdir(parents=True, exist_ok=True)
    n, p, H, W = spec.n_frames, len(scene.people), spec.height, spec.width
    K = torch.from_numpy(scene.K).float()
    bank = sample_backgrounds(np.random.default_rng(scene.background_seed), 1, wall_radius=scene.wall_radius)
    static_cam = spec.camera == "static"
    bg_static = render_backgrounds(bank, K, scene.cam_R[:1], scene.cam_t[:1], H, W)[0] if static_cam else None

    # per-person face colours, occluder meshes (world)
    faces_b = body.faces
    nfb = faces_b.shape[0]
    person_cols = [torch.from_numpy(q.palette)[body.part_labels] for q in scene.people]
    occ = [box_mesh(o.centre_xz, o.size, o.yaw) for o in scene.occluders]
    occ_v = torch.from_numpy(np.concatenate([v for v, _ in occ])).float() if occ else torch.zeros(0, 3)
    occ_f = (
        torch.from_numpy(np.concatenate([f + 8 * i for i, (_, f) in enumerate(occ)]))
        if occ
        else torch.zeros(0, 3, dtype=torch.int64)
    )
    occ_inst = torch.from_numpy(np.repeat(np.arange(len(occ)), 12)) if occ else torch.zeros(0, dtype=torch.int64)
    occ_col = (
        torch.tensor([o.color for o in scene.occluders]).float().repeat_interleave(12, 0) if occ else torch.zeros(0, 3)
    )
    light_w = torch.tensor(scene.light.direction).float()

    joints2d = np.zeros((n, p, 24, 2), np.float32)
    joints3d = np.zeros((n, p, 24, 3), np.float32)
    in_frame = np.zeros((n, p), bool)
    visible = np.zeros((n, p), np.float32)
    boxes = np.full((n, p, 4), np.nan, np.float32)
    noise_rng = torch.Generator().manual_seed(int(spec.seed) * 7919 + 1)
    # sensor noise: a few fixed noise frames, cycled with random flips (cheap, deterministic)
    noise_bank = torch.randn((4, H, W, 3), generator=noise_rng) * spec.noise if spec.noise > 0 else None
    writer = VideoWriter(clip_dir / f"{spec.name}.mp4", W, H, spec.fps)
    rotmats = axis_angle_to_matrix(torch.from_numpy(gt.world_poses).reshape(n, p, 24, 3))
    betas = torch.from_numpy(gt.betas)
    wtrans = torch.from_numpy(gt.world_transl)
    try:
        for s in tqdm(range(0, n, chunk), desc=spec.name, unit="chunk", disable=not progress, leave=False):
            e = min(n, s + chunk)
            c = e - s
            R = torch.from_numpy(scene.cam_R[s:e]).float()
            t = torch.from_numpy(scene.cam_t[s:e]).float()
            verts_list, faces_list, inst_list, col_list, vimg_list = [], [], [], [], []
            # instance ids in a chunk: person k of frame i -> i * p + k; pillars after c * p
            nv_total = 0
            if p:
                with torch.no_grad():
                    out = body.model(
                        rotmats[s:e].reshape(c * p, 24, 3, 3), betas.repeat(c, 1), wtrans[s:e].reshape(c * p, 3)
                    )
                nvb = out.vertices.shape[1]
                vw = out.vertices.reshape(c, p * nvb, 3)
                vc = torch.einsum("cij,cvj->cvi", R, vw) + t[:, None]
                jc = torch.einsum("cij,cvj->cvi", R, out.joints[:, :24].reshape(c, p * 24, 3)) + t[:, None]
                jc = jc.reshape(c, p, 24, 3)
                joints3d[s:e] = jc.numpy()
                joints2d[s:e] = project(jc, K).numpy()
                vcp = vc.reshape(c, p, nvb, 3)
                uv = project(vcp, K)
                ok = (
                    (vcp[..., 2] > NEAR)
                    & (uv[..., 0] >= -0.5)
                    & (uv[..., 0] < W - 0.5)
                    & (uv[..., 1] >= -0.5)
                    & (uv[..., 1] < H - 0.5)
                )
                in_frame[s:e] = ok.any(-1).numpy()
                verts_list.append(vc.reshape(-1, 3))
                vimg_list.append(torch.arange(c).repeat_interleave(p * nvb))
                offs = (torch.arange(c * p) * nvb)[:, None, None]
                faces_list.append((faces_b[None] + offs).reshape(-1, 3))
                inst_list.append(torch.arange(c * p).repeat_interleave(nfb))
                col_list.append(torch.cat(person_cols).repeat(c, 1))
                nv_total = c * p * nvb
            if occ:
                ov = torch.einsum("cij,vj->cvi", R, occ_v) + t[:, None]
                nvo = occ_v.shape[0]
                verts_list.append(ov.reshape(-1, 3))
                vimg_list.append(torch.arange(c).repeat_interleave(nvo))
                faces_list.append((occ_f[None] + nv_total + (torch.arange(c) * nvo)[:, None, None]).reshape(-1, 3))
                inst_list.append(c * p + occ_inst.repeat(c))
                col_list.append(occ_col.repeat(c, 1))
            if verts_list:
                ras = rasterize(
                    torch.cat(verts_list),
                    torch.cat(faces_list),
                    K,
                    H,
                    W,
                    vert_image=torch.cat(vimg_list),
                    n_images=c,
                    face_instance=torch.cat(inst_list),
                    n_instances=c * p,
                    face_colors=torch.cat(col_list),
                    light_dir=torch.einsum("cij,j->ci", R, light_w),
                    light_color=torch.tensor(scene.light.color),
                    ambient=torch.tensor(scene.light.ambient),
                    near=NEAR,
                    cull_backfaces=True,
                    coverage_margin=COVERAGE_MARGIN if p else None,
                )
                fg = ras.rgb
                # person index per pixel; -1 background, p for a pillar
                inst = torch.where(ras.instance >= c * p, p, ras.instance % max(p, 1))
                inst = torch.where(ras.instance < 0, -1, inst)
            else:
                fg = torch.zeros(c, H, W, 3)
                inst = torch.full((c, H, W), -1, dtype=torch.int64)
            bg = bg_static.expand(c, H, W, 3) if static_cam else render_backgrounds(bank, K, R, t, H, W, scale=2)
            img = torch.where((inst >= 0)[..., None], fg, bg) * 255.0
            if noise_bank is not None:
                sel = torch.randint(0, 4, (c,), generator=noise_rng)
                sign = torch.randint(0, 2, (c, 1, 1, 1), generator=noise_rng).float() * 2 - 1
                img = img + noise_bank[sel] * sign
            writer.write(img.round().clamp(0, 255).to(torch.uint8).numpy())
            if p:
                vis, bx = _visibility(inst, p, H, W)
                alone = ras.coverage.reshape(c, p).numpy().astype(np.float64)
                visible[s:e] = np.where(alone > 0, vis / np.maximum(alone, 1), 0.0)
                boxes[s:e] = bx
    finally:
        writer.close()

    pts = np.arange(n, dtype=np.float64) / spec.fps
    arrays = {
        "video_id": np.array(spec.name),
        "fps": np.array(float(spec.fps)),
        "width": np.array(W, dtype=np.int64),
        "height": np.array(H, dtype=np.int64),
        "n_frames": np.array(n, dtype=np.int64),
        "pts": pts,
        "K": scene.K.astype(np.float64),
        "cam_R": scene.cam_R.astype(np.float64),
        "cam_t": scene.cam_t.astype(np.float64),
        "person_id": np.array([q.person_id for q in scene.people], dtype=np.int64),
        "betas": gt.betas.astype(np.float32),
        "poses": gt.poses.astype(np.float32),
        "transl": gt.transl.astype(np.float32),
        "world_poses": gt.world_poses.astype(np.float32),
        "world_transl": gt.world_transl.astype(np.float32),
        "in_frame": in_frame,
        "visible_frac": visible.astype(np.float32),
        "boxes": boxes,
        "joints2d": joints2d,
        "joints3d": joints3d,
        "gender": np.array("neutral"),
        "body_model": np.array(spec.body_model),
        "body_model_sha256": np.array(body.sha256),
    }
    atomic_write_bytes(clip_dir / "gt.npz", _write_npz(arrays))
    atomic_write_json(clip_dir / "scene.json", scene_record(scene))
    return clip_dir


def scene_record(scene: Scene) -> dict:
    """scene.json content: the spec (enough to re-render) plus what was sampled from it
    (with crossings or groups, their ``layout``: see :class:`~hmrflow.jobs.synth.scene.Scene`)."""
    record = {
        "spec": scene.spec.to_dict(),
        "generator": "hmrflow.jobs.synth.clip.render_clip",
        "pixel_convention": "opencv: pixel centres at integer coordinates; boxes = visible pixel extents",
        "people": [{"person_id": q.person_id, "role": q.role} for q in scene.people],
        "occluders": [
            {"centre_xz": list(o.centre_xz), "size": list(o.size), "yaw": o.yaw, "color": list(o.color)}
            for o in scene.occluders
        ],
        "light": {
            "direction": list(scene.light.direction),
            "color": list(scene.light.color),
            "ambient": list(scene.light.ambient),
        },
        "background_seed": scene.background_seed,
    }
    if scene.extra:
        record["layout"] = scene.extra
    return record


def _visibility(inst: torch.Tensor, p: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Visible pixel counts (C, P) and boxes (C, P, 4) of each person from the instance maps."""
    c = inst.shape[0]
    flat = inst.reshape(c, -1)
    valid = (flat >= 0) & (flat < p)
    key = torch.where(valid, flat, torch.full_like(flat, p)) + (p + 1) * torch.arange(c)[:, None]
    counts = torch.bincount(key.reshape(-1), minlength=c * (p + 1)).reshape(c, p + 1)[:, :p]
    ys = torch.arange(H).repeat_interleave(W).expand(c, -1)
    xs = torch.arange(W).repeat(H).expand(c, -1)
    big = torch.full((c * (p + 1),), 1 << 30, dtype=torch.int64)
    box = []
    for coord, red, init in ((xs, "amin", 1 << 30), (ys, "amin", 1 << 30), (xs, "amax", -1), (ys, "amax", -1)):
        buf = torch.full_like(big, init)
        buf.scatter_reduce_(0, key.reshape(-1), coord.reshape(-1), reduce=red, include_self=True)
        box.append(buf.reshape(c, p + 1)[:, :p])
    bx = torch.stack(box, -1).float() + torch.tensor([-0.5, -0.5, 0.5, 0.5])
    bx[counts == 0] = float("nan")
    return counts.numpy().astype(np.float64), bx.numpy().astype(np.float32)


def render_clip_json(scene_json: str | Path, out_dir: str | Path) -> Path:
    """Re-render a clip from its scene.json."""
    spec = SceneSpec.from_dict(json.loads(Path(scene_json).read_text())["spec"])
    return render_clip(spec, out_dir)
