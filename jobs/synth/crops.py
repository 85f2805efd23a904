"""Single-person training crops with exact ground truth, rendered in batches.

Each crop shows one *target* person, posed from the motion library (plus small random joint
perturbations), seen from a random viewpoint, in a virtual full image (random size and
field of view) from which a box around the person is cropped and resized to the crop size.
Rendering happens directly with the crop's intrinsics (a crop + resize of a pinhole image
is a pinhole image), so nothing is resampled.  Sometimes a second person or a box partly
occludes the target, and sometimes the box is shifted/shrunk so the crop truncates the body.

Camera frame = world frame here (OpenCV axes), so all GT is in the camera frame:
``rotmats[:, 0]`` is the global orientation, ``transl`` the SMPL translation and
``joints3d`` the joints.  The full-image camera is ``K_full``; the crop maps full-image
pixel ``p`` to crop pixel ``(p - box[:2] - 0.5) * crop_size / box_size - 0.5`` (pixel centres on
integers in both).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hmrflow.jobs.synth.backgrounds import render_backgrounds, sample_backgrounds
from hmrflow.jobs.synth.clip import BodyAssets, load_body_assets
from hmrflow.jobs.synth.scene import sample_betas
from hmrflow.jobs.synth.world import box_mesh
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.stages.render.raster import project, rasterize
from hmrflow.stages.render.shading import color_temperature_rgb, sample_palette

NEAR = 0.05
# camera frame <- body world frame (y up, facing +z): rotation by 180 deg about x, so that a
# body at zero yaw faces the camera
FLIP = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])


class PosePool:
    """A pool of body poses (local axis-angle, root excluded) from motion-library clips."""

    def __init__(self, rng: np.random.Generator, n_motions: int = 12, seconds: float = 4.0, fps: float = 10.0) -> None:
        from hmrflow.priors import motion_library as ml

        poses = []
        names = sorted(ml.MOTIONS)
        for i in range(n_motions):
            if i % 2 == 0:
                m = ml.compose_motion(rng, seconds, fps)
            else:
                m = ml.MOTIONS[names[int(rng.integers(len(names)))]](rng, seconds, fps)
            poses.append(np.asarray(m.poses, np.float32).reshape(-1, 24, 3))
        self.poses = np.concatenate(poses)  # (M, 24, 3)

    def sample(self, rng: np.random.Generator, n: int, jitter: float = 0.12) -> np.ndarray:
        """(n, 24, 3) poses; joint 0 is set later (viewpoint), the others get small noise."""
        p = self.poses[rng.integers(0, len(self.poses), n)].copy()
        p[:, 1:] += rng.normal(0, jitter, size=p[:, 1:].shape).astype(np.float32) * (rng.uniform(size=(n, 1, 1)) < 0.7)
        p[:, 0] = 0.0
        return p


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def render_crops(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int] = (256, 192),
    body: BodyAssets | None = None,
    pose_pool: PosePool | None = None,
    batch: int = 64,
    p_occluder: float = 0.3,
    p_truncate: float = 0.2,
    noise: float = 2.0,
    n_backgrounds: int = 16,
) -> dict[str, np.ndarray]:
    """Render ``n`` single-person crops of ``size = (H, W)``.

    ``n_backgrounds`` procedural backgrounds are sampled per call and seen from a random
    camera in every crop; render in batches of ``batch`` crops.

    Returns a dict of arrays (N = n):
        images (N, H, W, 3) uint8; masks (N, H, W) bool (visible pixels of the target);
        rotmats (N, 24, 3, 3) camera frame; poses (N, 72) axis-angle camera frame;
        betas (N, 10); transl (N, 3) camera-frame SMPL translation;
        joints3d (N, 24, 3) camera frame; joints2d (N, 24, 2) crop pixels;
        K (N, 3, 3) crop intrinsics; K_full (N, 3, 3) and full_size (N, 2) (W, H) of the
        virtual full image; box (N, 4) the crop's xyxy box in the full image (pixel edges);
        visible_frac (N,) target pixels visible in the crop / pixels of the target alone
        on an enlarged plane.
    """
    body = body or load_body_assets()
    pose_pool = pose_pool or PosePool(rng)
    bank = sample_backgrounds(rng, n_backgrounds)
    parts = []
    for s in range(0, n, batch):
        parts.append(_render_batch(rng, min(batch, n - s), size, body, pose_pool, bank, p_occluder, p_truncate, noise))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _render_batch(rng, b, size, body, pose_pool, bank, p_occ, p_trunc, noise) -> dict[str, np.ndarray]:
    H, W = size
    model = body.model
    # ---- target and occluder people ---------------------------------------------------
    has_person_occ = rng.uniform(size=b) < p_occ * 0.6
    has_box_occ = ~has_person_occ & (rng.uniform(size=b) < p_occ * 0.4 / max(1e-6, 1 - p_occ * 0.6))
    n_occ_p = int(has_person_occ.sum())
    nb = b + n_occ_p
    betas = np.stack([sample_betas(rng) for _ in range(nb)])
    poses = pose_pool.sample(rng, nb)
    yaw = rng.uniform(-math.pi, math.pi, nb)
    pitch = np.radians(rng.uniform(-15, 40, nb))  # camera above looking down is common
    roll = np.radians(rng.normal(0, 6, nb))
    root_world = _rot_y(yaw)  # the motion's root heading is replaced by the viewpoint yaw
    tilt = np.einsum("nij,njk->nik", _rot_z(roll), _rot_x(-pitch))
    R_root = np.einsum("nij,jk,nkl->nil", tilt, FLIP.numpy(), root_world).astype(np.float32)
    rot = axis_angle_to_matrix(torch.from_numpy(poses))
    rot[:, 0] = torch.from_numpy(R_root)
    betas_t = torch.from_numpy(betas)
    with torch.no_grad():
        j0 = model.rest_joints(betas_t)[:, 0]
        # full-image camera and placement of the root
        full_h = rng.choice([480, 720, 1080], nb).astype(np.float64)
        full_w = np.round(full_h * rng.choice([4 / 3, 16 / 9, 9 / 16, 1.0], nb))
        vfov = np.radians(rng.uniform(35, 75, nb))
        f = 0.5 * full_h / np.tan(vfov / 2)
        frac = np.exp(rng.uniform(np.log(0.15), np.log(0.9), nb))  # apparent height / image height
        depth = 1.7 * f / (frac * full_h)
        u = rng.uniform(0.25, 0.75, nb) * full_w
        v = rng.uniform(0.3, 0.7, nb) * full_h
        root_c = np.stack([(u - (full_w - 1) / 2) * depth / f, (v - (full_h - 1) / 2) * depth / f, depth], -1)
        # occluding people stand nearer, beside the target's line of sight
        if n_occ_p:
            tgt = np.nonzero(has_person_occ)[0]
            k = np.arange(b, nb)
            d_occ = depth[tgt] * rng.uniform(0.55, 0.9, n_occ_p)
            side = rng.choice([-1.0, 1.0], n_occ_p) * rng.uniform(0.25, 0.6, n_occ_p)
            root_c[k] = root_c[tgt] * (d_occ / depth[tgt])[:, None] + np.stack(
                [side, rng.uniform(-0.2, 0.2, n_occ_p), np.zeros(n_occ_p)], -1
            )
            f[k], full_h[k], full_w[k] = f[tgt], full_h[tgt], full_w[tgt]
        transl = torch.from_numpy(root_c).float() - j0
        out = model(rot, betas_t, transl)
    verts, joints = out.vertices, out.joints[:, :24]
    nvb = verts.shape[1]

    # ---- crop boxes in the full image, crop intrinsics ----------------------------------
    K_full = np.zeros((b, 3, 3))
    K_full[:, 0, 0] = K_full[:, 1, 1] = f[:b]
    K_full[:, 0, 2], K_full[:, 1, 2], K_full[:, 2, 2] = (full_w[:b] - 1) / 2, (full_h[:b] - 1) / 2, 1.0
    uv_full = project(verts[:b], torch.from_numpy(K_full).float()[:, None]).numpy()
    lo, hi = uv_full.min(1), uv_full.max(1)
    centre, extent = (lo + hi) / 2, hi - lo
    aspect = H / W
    box_h = np.maximum(extent[:, 1], extent[:, 0] * aspect) * rng.uniform(1.1, 1.35, b)
    trunc = rng.uniform(size=b) < p_trunc
    box_h = np.where(trunc, box_h * rng.uniform(0.55, 0.9, b), box_h)
    shift = rng.normal(0, 0.04, (b, 2)) + trunc[:, None] * rng.uniform(-0.25, 0.25, (b, 2))
    centre = centre + shift * box_h[:, None]
    box_w = box_h / aspect
    box = np.stack(
        [centre[:, 0] - box_w / 2, centre[:, 1] - box_h / 2, centre[:, 0] + box_w / 2, centre[:, 1] + box_h / 2], -1
    )
    s = H / box_h  # full pixels -> crop pixels
    K_crop = np.zeros((b, 3, 3))
    K_crop[:, 0, 0] = K_crop[:, 1, 1] = f[:b] * s
    # pixel centre convention: crop = (full - box0 + 0.5) * s - 0.5
    K_crop[:, 0, 2] = (K_full[:, 0, 2] - box[:, 0] + 0.5) * s - 0.5
    K_crop[:, 1, 2] = (K_full[:, 1, 2] - box[:, 1] + 0.5) * s - 0.5
    K_crop[:, 2, 2] = 1.0
    Kc = torch.from_numpy(K_crop).float()

    # ---- meshes: targets, occluding people, boxes ------------------------------------
    img_of = np.concatenate([np.arange(b), np.nonzero(has_person_occ)[0]])
    faces_b = body.faces
    nfb = faces_b.shape[0]
    v_list = [verts.reshape(-1, 3)]
    f_list = [(faces_b[None] + (torch.arange(nb) * nvb)[:, None, None]).reshape(-1, 3)]
    vimg = [torch.from_numpy(img_of).repeat_interleave(nvb)]
    inst = [torch.cat([torch.arange(b), torch.full((n_occ_p,), b, dtype=torch.int64)]).repeat_interleave(nfb)]
    cols = [torch.from_numpy(np.stack([sample_palette(rng) for _ in range(nb)]))[:, body.part_labels].reshape(-1, 3)]
    nv_total = nb * nvb
    for i in np.nonzero(has_box_occ)[0]:
        d = root_c[i, 2] * rng.uniform(0.5, 0.9)
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5)
        bv, bf = box_mesh(
            (0.0, 0.0), (rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.2), rng.uniform(0.2, 0.5)), rng.uniform(-1, 1)
        )
        bv = bv - np.array([0.0, bv[:, 1].max() / 2, 0.0])
        bv = bv @ _rot_x(np.array(rng.uniform(-0.3, 0.3))).T
        bv = bv + root_c[i] * (d / root_c[i, 2]) + np.array([side, rng.uniform(-0.5, 0.6), 0.0])
        v_list.append(torch.from_numpy(bv).float())
        f_list.append(torch.from_numpy(bf) + nv_total)
        nv_total += 8
        vimg.append(torch.full((8,), int(i), dtype=torch.int64))
        inst.append(torch.full((12,), b, dtype=torch.int64))
        cols.append(torch.from_numpy(rng.uniform(0.1, 0.9, (1, 3))).float().expand(12, 3))
    lights = np.stack([_light(rng) for _ in range(b)])  # (b, 3, 3): dir, color, ambient
    ras = rasterize(
        torch.cat(v_list),
        torch.cat(f_list),
        Kc,
        H,
        W,
        vert_image=torch.cat(vimg),
        n_images=b,
        face_instance=torch.cat(inst),
        n_instances=b,
        face_colors=torch.cat(cols),
        light_dir=torch.from_numpy(lights[:, 0]).float(),
        light_color=torch.from_numpy(lights[:, 1]).float(),
        ambient=torch.from_numpy(lights[:, 2]).float(),
        near=NEAR,
        cull_backfaces=True,
        coverage_margin=0.5,
    )
    # ---- backgrounds: a few per batch, each seen from a random camera --------------------
    n_bg = bank.n
    cam_h = rng.uniform(0.8, 2.5, b)
    ang = rng.uniform(-math.pi, math.pi, b)
    R_bg = np.einsum(
        "nij,njk->nik",
        _rot_x(-np.radians(rng.uniform(-5, 30, b))),
        np.einsum("ij,njk->nik", FLIP.numpy() @ np.diag([1.0, 1.0, 1.0]), _rot_y(ang)),
    )
    t_bg = -np.einsum("nij,nj->ni", R_bg, np.stack([np.zeros(b), cam_h, np.zeros(b)], -1))
    bg = render_backgrounds(
        bank,
        Kc,
        torch.from_numpy(R_bg).float(),
        torch.from_numpy(t_bg).float(),
        H,
        W,
        torch.from_numpy(rng.integers(0, n_bg, b)),
        scale=2,
    )
    img = torch.where(ras.mask[..., None], ras.rgb, bg).mul_(255.0)
    if noise > 0:
        img += torch.from_numpy(rng.normal(0, noise, (1, H, W, 3)).astype(np.float32)) * torch.from_numpy(
            rng.uniform(0, 1, (b, 1, 1, 1)).astype(np.float32)
        )
    images = img.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    mask = (ras.instance == torch.arange(b)[:, None, None]).numpy()
    visible = mask.reshape(b, -1).sum(1) / np.maximum(ras.coverage.numpy(), 1)
    from hmrflow.priors.rotations import matrix_to_axis_angle

    rot_t = rot[:b]
    return {
        "images": images,
        "masks": mask,
        "rotmats": rot_t.numpy().astype(np.float32),
        "poses": matrix_to_axis_angle(rot_t).reshape(b, 72).numpy().astype(np.float32),
        "betas": betas[:b].astype(np.float32),
        "transl": transl[:b].numpy().astype(np.float32),
        "joints3d": joints[:b].numpy().astype(np.float32),
        "joints2d": project(joints[:b], Kc[:, None]).numpy().astype(np.float32),
        "K": K_crop.astype(np.float32),
        "K_full": K_full.astype(np.float32),
        "full_size": np.stack([full_w[:b], full_h[:b]], -1).astype(np.int64),
        "box": box.astype(np.float32),
        "visible_frac": visible.astype(np.float32),
    }


def _light(rng: np.random.Generator) -> np.ndarray:
    """(3, 3): direction toward the light (camera frame), light colour, ambient colour."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1.0, -0.2), rng.uniform(-1.0, 0.3)])
    tint = color_temperature_rgb(rng.uniform(2800, 9000))
    return np.stack([d / np.linalg.norm(d), tint * rng.uniform(0.4, 0.9), (0.6 + 0.4 * tint) * rng.uniform(0.25, 0.5)])
