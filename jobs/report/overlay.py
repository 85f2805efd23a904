"""Overlay video: each tracked person's mesh (or skeleton) drawn over the clip's frames.

``render_overlay(video_dir, clip_path, dest)`` decodes the clip with the pipeline's decode
stage, poses the body model for every (track, frame) row of ``OUT/<video_id>/``, rasterises
all people of a batch of frames in one call of the project's torch rasteriser
(:func:`hmrflow.stages.render.raster.rasterize`, CPU or GPU, headless) and writes an H.264
mp4 with PyAV.  Frames keep their original timestamps; frames without tracks are copied.

Camera: outputs are in the OpenCV camera frame of the clip; the intrinsics are the camera
the pipeline recorded in ``manifest.json`` (rescaled to the clip's size), else the
pipeline's default (HMR2.0: focal ``5000 / 256 * max(W, H)`` pixels, principal point at
the image centre); ``focal`` overrides both.  Colours: :func:`hmrflow.jobs.report.colors.track_color`
(stable per track id), with the id written above each person.

Views: ``camera`` (the overlay only), ``side-by-side`` (overlay | the same people seen from
the camera's right, on grey) or ``top`` (overlay | seen from above, far people at the top).
The extra panel's virtual camera looks at the median root position of the clip from a
distance that fits everyone.  ``map`` (overlay | a map of the world frame seen from above:
every track's ground path, the part walked so far drawn thick, each person's position now,
and the first frame's camera; docs/world.md) needs the world-frame columns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from hmrflow.jobs.export.reading import TrackData, VideoOutput, load_video_output
from hmrflow.jobs.report.colors import track_color
from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)

Mode = Literal["mesh", "skeleton"]
View = Literal["camera", "side-by-side", "top", "map"]
#: Rotations from the camera frame into the extra panel's camera (rows = new axes in old coords).
PANEL_ROTATIONS: dict[str, np.ndarray] = {
    # camera on the right (+x) looking toward -x: x' = z, y' = y, z' = -x
    "side-by-side": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
    # camera above (-y) looking down (+y): x' = x, y' = -z, z' = y
    "top": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
}
PANEL_BACKGROUND = (48, 48, 52)
#: Timestamp resolution of the written mp4.
_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class OverlayOptions:
    """How the overlay looks.

    mode: draw the shaded mesh or a skeleton (bones + joints).
    view: camera only, or with a side / top view panel to the right.
    focal: focal length in pixels (None = HMR2.0's default for the frame size).
    alpha: mesh opacity over the frame.
    labels: write "id N" above each person.
    batch_size: frames decoded and rasterised together.
    crf: x264 quality (lower = better, bigger).
    """

    mode: Mode = "mesh"
    view: View = "camera"
    focal: float | None = None
    alpha: float = 0.75
    labels: bool = True
    batch_size: int = 8
    crf: int = 20
    device: str = "cpu"


def intrinsics(
    width: int, height: int, focal: float | None = None, recorded: dict[str, Any] | None = None
) -> np.ndarray:
    """(3, 3) camera matrix for a ``width`` x ``height`` clip (see the module doc).

    recorded: the manifest's ``camera`` entry (focal_px, cx, cy at width x height), used
    when no ``focal`` is given.
    """
    if not focal and recorded and recorded.get("focal_px") and recorded.get("width"):
        s = width / float(recorded["width"])
        return np.array(
            [
                [recorded["focal_px"] * s, 0.0, recorded["cx"] * s],
                [0.0, recorded["focal_px"] * s, recorded["cy"] * s],
                [0.0, 0.0, 1.0],
            ]
        )
    f = float(focal) if focal else 5000.0 / 256.0 * max(width, height)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class _Rows:
    """Index of (frame_idx -> [(track, row)]) over all tracks."""

    by_frame: dict[int, list[tuple[TrackData, int]]]

    @classmethod
    def build(cls, tracks: list[TrackData]) -> "_Rows":
        by: dict[int, list[tuple[TrackData, int]]] = {}
        for t in tracks:
            for i, f in enumerate(t.frame_idx.tolist()):
                by.setdefault(int(f), []).append((t, i))
        return cls(by)


def panel_camera(
    tracks: list[TrackData], view: str, K: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) mapping camera-frame points into the extra panel's camera: ``p' = R p + t``."""
    rot = PANEL_ROTATIONS[view]
    roots = np.concatenate([t.transl for t in tracks]).astype(np.float64) if tracks else np.zeros((1, 3))
    centre = np.median(roots, axis=0)
    spread = np.abs((roots - centre) @ rot.T)[:, :2].max(axis=0) + 1.2  # half extents + a body
    f = K[0, 0]
    dist = max(f * spread[0] / (0.45 * width), f * spread[1] / (0.45 * height), 2.0)
    return rot, -rot @ centre + np.array([0.0, 0.0, dist])


def _batch_bodies(rows: list[tuple[TrackData, int]], body_model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pose the body model for (track, row) pairs: vertices (N, V, 3), joints (N, 24, 3), camera frame."""
    import torch
    from scipy.spatial.transform import Rotation

    aa = np.stack([t.poses[i] for t, i in rows]).astype(np.float64).reshape(-1, 3)
    rot = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix().reshape(len(rows), 24, 3, 3).astype(np.float32))
    betas = torch.from_numpy(np.stack([t.betas for t, _ in rows]).astype(np.float32))
    transl = torch.from_numpy(np.stack([t.transl[i] for t, i in rows]).astype(np.float32))
    with torch.no_grad():
        out = body_model(rot.to(body_model.device), betas.to(body_model.device), transl.to(body_model.device))
    return out.vertices.float().cpu().numpy(), out.joints.float().cpu().numpy()


def _rasterize_people(
    verts: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    image_of: np.ndarray,
    n_images: int,
    K: np.ndarray,
    width: int,
    height: int,
    device: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Shaded RGB (B, H, W, 3) float in [0, 1] and mask (B, H, W) of N people over B images.

    verts: (N, V, 3) camera frame; faces: (F, 3); colors: (N, 3) in [0, 1]; image_of: (N,) image index.
    """
    import torch

    from hmrflow.stages.render.raster import rasterize

    n, v = verts.shape[:2]
    f = faces.shape[0]
    vt = torch.from_numpy(verts.reshape(n * v, 3)).to(device)
    ft = (
        (torch.from_numpy(faces.astype(np.int64))[None] + (torch.arange(n) * v)[:, None, None])
        .reshape(n * f, 3)
        .to(device)
    )
    vert_image = torch.from_numpy(np.repeat(image_of.astype(np.int64), v)).to(device)
    face_instance = torch.arange(n, device=device).repeat_interleave(f)
    face_colors = torch.from_numpy(np.repeat(colors.astype(np.float32), f, axis=0)).to(device)
    with torch.no_grad():
        res = rasterize(
            vt,
            ft,
            torch.from_numpy(K).float(),
            height,
            width,
            vert_image=vert_image,
            n_images=n_images,
            face_instance=face_instance,
            n_instances=n,
            face_colors=face_colors,
            cull_backfaces=True,
            ambient=torch.tensor([0.45, 0.45, 0.45]),
            light_color=torch.tensor([0.65, 0.65, 0.65]),
        )
    return res.rgb.cpu().numpy(), res.mask.cpu().numpy()


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 2) pixels; NaN behind the camera."""
    z = points[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (points[..., :2] / z) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return np.where(z > 0.05, uv, np.nan)


def _draw_layer(
    images: np.ndarray,
    rows: list[tuple[TrackData, int]],
    image_of: np.ndarray,
    verts: np.ndarray,
    joints: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    opts: OverlayOptions,
) -> np.ndarray:
    """Draw the people onto (B, H, W, 3) uint8 images (a copy is returned)."""
    from PIL import Image, ImageDraw

    from hmrflow.jobs.report.skeleton_draw import draw_skeleton

    b, h, w = images.shape[:3]
    out = images.copy()
    cols = np.array([track_color(t.track_id) for t, _ in rows], np.float64) / 255.0
    if rows and opts.mode == "mesh":
        rgb, mask = _rasterize_people(verts, faces, cols, image_of, b, K, w, h, opts.device)
        blend = opts.alpha * rgb * 255.0 + (1 - opts.alpha) * out.astype(np.float32)
        out = np.where(mask[..., None], np.clip(blend + 0.5, 0, 255).astype(np.uint8), out)
    if not rows or (opts.mode == "mesh" and not opts.labels):
        return out
    pil = [Image.fromarray(im) for im in out]
    draws = [ImageDraw.Draw(p) for p in pil]
    for k, (t, _) in enumerate(rows):
        d = draws[int(image_of[k])]
        col = track_color(t.track_id)
        if opts.mode == "skeleton":
            draw_skeleton(d, _project(joints[k], K), col, width=max(2, w // 320), radius=max(2, w // 320))
        if opts.labels:
            uv = _project(verts[k], K)
            ok = np.isfinite(uv).all(axis=1)
            if ok.any():
                x = float(np.median(uv[ok, 0]))
                y = float(uv[ok, 1].min()) - 14
                text = f"id {t.track_id}"
                box = d.textbbox((x, y), text, anchor="mm")
                d.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=col)
                d.text((x, y), text, fill=(0, 0, 0), anchor="mm")
    return np.stack([np.asarray(p) for p in pil])


@dataclass(frozen=True)
class WorldMap:
    """The ``map`` panel: ground paths (world x, z) of every track drawn from above.

    paths: per track (track id, frame_idx (T,), (T, 2) panel pixels); size: (width, height).
    """

    paths: list[tuple[int, np.ndarray, np.ndarray]]
    camera_px: tuple[float, float]
    size: tuple[int, int]

    @classmethod
    def build(cls, tracks: list[TrackData], width: int, height: int) -> "WorldMap":
        """Fit every track's world path into a ``width`` x ``height`` panel (equal scale on both axes)."""
        xz = [np.asarray(t.world_transl, np.float64)[:, [0, 2]] if t.world_transl is not None else None for t in tracks]
        pts = [p[np.isfinite(p).all(1)] for p in xz if p is not None]
        if not pts or not sum(len(p) for p in pts):
            raise HmrflowError("--view map needs the world-frame columns (an output made with camera.world on)")
        allp = np.concatenate(pts + [np.zeros((1, 2))])
        lo, hi = allp.min(0) - 0.5, allp.max(0) + 0.5
        pad = 0.08 * min(width, height)
        s = min((width - 2 * pad) / (hi[0] - lo[0]), (height - 2 * pad) / (hi[1] - lo[1]))
        cx, cz = (lo + hi) / 2

        def px(p: np.ndarray) -> np.ndarray:
            # +x is the camera's left: drawn on the left, so the map reads like the image; far is up
            return np.stack([width / 2 - (p[:, 0] - cx) * s, height / 2 - (p[:, 1] - cz) * s], axis=1)

        paths = [(t.track_id, t.frame_idx, px(p)) for t, p in zip(tracks, xz) if p is not None]
        cam = px(np.zeros((1, 2)))[0]
        return cls(paths, (float(cam[0]), float(cam[1])), (width, height))

    def draw(self, frame: int) -> np.ndarray:
        """(height, width, 3) uint8 panel at ``frame``."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", self.size, PANEL_BACKGROUND)
        d = ImageDraw.Draw(img)
        x, y = self.camera_px
        d.polygon([(x, y - 9), (x - 7, y + 7), (x + 7, y + 7)], fill=(200, 200, 200))
        for tid, frames, p in self.paths:
            col = tuple(int(c) for c in track_color(tid))
            ok = np.isfinite(p).all(1)
            faint = tuple(int(0.45 * c + 0.55 * b) for c, b in zip(col, PANEL_BACKGROUND))
            if ok.sum() > 1:
                d.line([tuple(q) for q in p[ok]], fill=faint, width=1)
            done = ok & (frames <= frame)
            if done.sum() > 1:
                d.line([tuple(q) for q in p[done]], fill=col, width=3)
            now = np.nonzero(ok & (frames == frame))[0]
            if len(now):
                qx, qy = p[now[0]]
                d.ellipse([qx - 5, qy - 5, qx + 5, qy + 5], fill=col)
                d.text((qx + 7, qy - 7), str(tid), fill=col)
        return np.asarray(img)


def iter_overlay_frames(
    video: VideoOutput, clip_path: str, body_model: Any, opts: OverlayOptions = OverlayOptions()
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (frame_idx, pts, image (H, W', 3) uint8) for every decoded frame of the clip."""
    from hmrflow.pipeline.config import DecodeConfig
    from hmrflow.stages.decode import DecodeStage
    from hmrflow.stages.video_probe import probe_video, to_clip_ref

    clip = to_clip_ref(probe_video(clip_path), video.video_id)
    width, height = clip.width, clip.height
    K = intrinsics(width, height, opts.focal, video.manifest.get("camera"))
    tracks = [t for t in video.tracks if len(t)]
    index = _Rows.build(tracks)
    faces = np.asarray(body_model.faces, np.int64)
    panel = panel_camera(tracks, opts.view, K, width, height) if opts.view in PANEL_ROTATIONS else None
    world_map = WorldMap.build(tracks, width, height) if opts.view == "map" else None
    for batch in DecodeStage(DecodeConfig(backend="av", batch_size=opts.batch_size))(clip):
        rows: list[tuple[TrackData, int]] = []
        image_of: list[int] = []
        for b, f in enumerate(batch.frame_idx.tolist()):
            for r in index.by_frame.get(int(f), []):
                rows.append(r)
                image_of.append(b)
        img_of = np.asarray(image_of, np.int64)
        if rows:
            verts, joints = _batch_bodies(rows, body_model)
        else:
            verts = np.zeros((0, 1, 3), np.float32)
            joints = np.zeros((0, 24, 3), np.float32)
        images = _draw_layer(batch.images, rows, img_of, verts, joints, faces, K, opts)
        if panel is not None:
            rot, tr = panel
            bg = np.empty_like(batch.images)
            bg[:] = PANEL_BACKGROUND
            pv = (verts.astype(np.float64) @ rot.T + tr).astype(np.float32)
            pj = (joints.astype(np.float64) @ rot.T + tr).astype(np.float32)
            side = _draw_layer(bg, rows, img_of, pv, pj, faces, K, OverlayOptions(**{**opts.__dict__, "alpha": 1.0}))
            images = np.concatenate([images, side], axis=2)
        if world_map is not None:
            images = np.concatenate([images, np.stack([world_map.draw(int(f)) for f in batch.frame_idx])], axis=2)
        for b in range(len(batch)):
            yield int(batch.frame_idx[b]), float(batch.pts[b]), images[b]


def render_overlay(
    video_dir: str | Path,
    clip_path: str | Path,
    dest: str | Path,
    body_model: Any = None,
    opts: OverlayOptions = OverlayOptions(),
    progress: bool = True,
) -> Path:
    """Write the overlay mp4 of ``OUT/<video_id>/`` over ``clip_path`` to ``dest``; returns ``dest``.

    Raises:
        VideoDecodeError: the clip cannot be read.
        HmrflowError: the outputs reference frames the clip does not have.
    """
    import av
    from tqdm import tqdm

    if body_model is None:
        from hmrflow.priors.body_model import load_body_model

        body_model = load_body_model("synthetic", device=opts.device)
    video = load_video_output(video_dir)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp.mp4")
    last_track_frame = max((int(t.frame_idx[-1]) for t in video.tracks if len(t)), default=-1)
    from hmrflow.stages.video_probe import probe_video

    info = probe_video(str(clip_path))
    n_total = int(info.n_frames) if info.n_frames > 0 else None
    last_seen = -1
    stream = None
    prev_pts = -1
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            bar = tqdm(total=n_total, desc=f"render {video.video_id}", unit="frame", disable=not progress)
            for fidx, pts, img in iter_overlay_frames(video, str(clip_path), body_model, opts):
                h, w = img.shape[:2]
                if stream is None:
                    stream = container.add_stream(
                        "libx264", rate=Fraction(round(info.fps or 30.0, 3)).limit_denominator(1001)
                    )
                    stream.width, stream.height = w + (w % 2), h + (h % 2)
                    stream.pix_fmt = "yuv420p"
                    stream.time_base = _TIME_BASE
                    stream.codec_context.time_base = _TIME_BASE
                    stream.options = {"crf": str(opts.crf), "preset": "veryfast"}
                if w % 2 or h % 2:
                    img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                p = max(int(round(pts / _TIME_BASE)), prev_pts + 1)
                frame.pts, frame.time_base = p, _TIME_BASE
                prev_pts = p
                for packet in stream.encode(frame):
                    container.mux(packet)
                last_seen = fidx
                bar.update(1)
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
            bar.close()
        if stream is None:
            raise HmrflowError(f"{clip_path}: no frames decoded")
        if last_track_frame > last_seen:
            log.warning(
                "%s: tracks reach frame %d but the clip ends at frame %d (is this the right clip?)",
                video.video_id,
                last_track_frame,
                last_seen,
            )
        tmp.replace(dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("%s: overlay written to %s", video.video_id, dest)
    return dest
