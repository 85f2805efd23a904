"""Draw SMPL skeletons with Pillow (thumbnails in the report, skeleton mode of the overlay)."""

from __future__ import annotations

import base64
import io

import numpy as np

from hmrflow.priors.skeleton import PARENTS


def draw_skeleton(
    draw,
    points_xy: np.ndarray,
    color: tuple[int, int, int],
    width: int = 3,
    radius: int = 3,
    valid: np.ndarray | None = None,
) -> None:
    """Draw bones (joint to parent) and joint dots on a ``PIL.ImageDraw.Draw``.

    points_xy: (24, 2) pixel coordinates; valid: (24,) bool (False: the joint is skipped).
    """
    p = np.asarray(points_xy, np.float64)
    ok = np.asarray(np.isfinite(p).all(axis=1), bool)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    for j in range(1, len(PARENTS)):
        k = int(PARENTS[j])
        if ok[j] and ok[k]:
            draw.line([tuple(p[k]), tuple(p[j])], fill=color, width=width)
    for j in range(len(p)):
        if ok[j]:
            x, y = p[j]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(20, 20, 20))


def skeleton_thumbnail(
    joints_cam: np.ndarray, color: tuple[int, int, int], size: tuple[int, int] = (120, 160)
) -> bytes:
    """PNG bytes of one pose seen from the camera (orthographic, joints (24, 3) camera frame)."""
    from PIL import Image, ImageDraw

    w, h = size
    xy = np.asarray(joints_cam, np.float64)[:, :2]  # x right, y down: image axes already
    lo, hi = xy.min(0), xy.max(0)
    scale = 0.85 * min(w / max(hi[0] - lo[0], 1e-6), h / max(hi[1] - lo[1], 1e-6))
    pix = (xy - (lo + hi) / 2) * scale + [w / 2, h / 2]
    img = Image.new("RGB", (w, h), (245, 245, 245))
    draw_skeleton(ImageDraw.Draw(img), pix, color, width=3, radius=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for inline images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
