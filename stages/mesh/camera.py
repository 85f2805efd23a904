"""Weak-perspective crop camera <-> full-image perspective camera translation.

Facts this module relies on (read in shubham-goel/4D-Humans @ 6ec7965: ``demo.py``,
``hmr2/utils/renderer.py::cam_crop_to_full``, ``hmr2/models/hmr2.py::forward_step``,
``hmr2/configs_hydra/experiment/default.yaml``; the code here is our own):

* The head predicts (s, tx, ty).  Inside the crop HMR2 uses focal 5000 over an image of
  ``IMAGE_SIZE = 256``: ``t = (tx, ty, 2 * 5000 / (256 * s))`` and projects with focal
  ``5000 / 256`` in units of the crop height, i.e. a body point X lands at
  ``crop_centre + b * s * (X_xy + t_xy) / 2`` image pixels (weak perspective), b = the crop
  height in image pixels (``box_size``).
* For the full image the demo uses ``focal = 5000 / 256 * max(img_w, img_h)`` with the
  principal point at the image centre, and
  ``tz = 2 f / (b s)``, ``tx' = tx + 2 (cx - W/2) / (b s)``, ``ty' = ty + 2 (cy - H/2) / (b s)``
  (``bs`` gets +1e-9).  With it the translated body origin projects to
  ``(cx + b s tx / 2, cy + b s ty / 2)``, the same pixel as in the crop.

Shapes: N rows; ``image_wh`` may be (2,) (one image size for all rows) or (N, 2); ``focal``
may be a float, (N,) or None (the default above).  All fp32.
"""

from __future__ import annotations

import torch

#: HMR2.0's focal length for a 256-pixel crop (``EXTRA.FOCAL_LENGTH``).
HMR2_FOCAL = 5000.0
#: The crop size HMR2's focal length refers to (``MODEL.IMAGE_SIZE``).
HMR2_CROP_RES = 256.0
_EPS = 1e-9


def _rows(x: torch.Tensor | float | tuple, n: int, width: int | None, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32, device=like.device)
    if width is None:
        return t.expand(n) if t.ndim == 0 else t.reshape(n)
    return t.expand(n, width) if t.ndim == 1 else t.reshape(n, width)


def default_focal(image_wh: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """HMR2.0's full-image focal length in pixels: 5000 / 256 * max(W, H); shape (...,)."""
    wh = torch.as_tensor(image_wh, dtype=torch.float32)
    return HMR2_FOCAL / HMR2_CROP_RES * wh.max(dim=-1).values


def diagonal_focal(image_wh: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """Focal length equal to the image diagonal, sqrt(W^2 + H^2) pixels (about 53 deg diagonal
    field of view; the default of CLIFF/TRAM-style pipelines for uncalibrated video); shape (...,)."""
    wh = torch.as_tensor(image_wh, dtype=torch.float32)
    return wh.norm(dim=-1)


def focal_by_rule(rule: str, image_wh: torch.Tensor | tuple[float, float]) -> torch.Tensor:
    """The focal length (pixels) an unknown camera gets under ``estimate.focal_default``:
    ``diagonal`` (:func:`diagonal_focal`) or ``hmr2`` (:func:`default_focal`); shape (...,)."""
    return diagonal_focal(image_wh) if rule == "diagonal" else default_focal(image_wh)


def cam_crop_to_full(
    pred_cam: torch.Tensor,
    center: torch.Tensor,
    size: torch.Tensor,
    image_wh: torch.Tensor | tuple[float, float],
    focal: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weak-perspective (s, tx, ty) (N, 3) of crops -> SMPL translation in the camera (N, 3).

    center: (N, 2) crop centre, size: (N,) crop height b (both image pixels, from
    :class:`hmrflow.stages.mesh.crop.CropBoxes`); the camera has focal ``focal`` and its
    principal point at the image centre.
    """
    n = pred_cam.shape[0]
    pred_cam = pred_cam.float()
    wh = _rows(image_wh, n, 2, pred_cam)
    f = _rows(default_focal(wh) if focal is None else focal, n, None, pred_cam)
    b = _rows(size, n, None, pred_cam)
    c = _rows(center, n, 2, pred_cam)
    bs = b * pred_cam[:, 0] + _EPS
    tz = 2 * f / bs
    txy = 2 * (c - wh / 2) / bs[:, None] + pred_cam[:, 1:]
    return torch.cat([txy, tz[:, None]], dim=-1)


def cam_full_to_crop(
    cam_t: torch.Tensor,
    center: torch.Tensor,
    size: torch.Tensor,
    image_wh: torch.Tensor | tuple[float, float],
    focal: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Inverse of :func:`cam_crop_to_full`: camera translation (N, 3) -> (s, tx, ty) (N, 3).

    Used to make training targets from ground-truth translations; needs tz > 0.
    """
    n = cam_t.shape[0]
    cam_t = cam_t.float()
    wh = _rows(image_wh, n, 2, cam_t)
    f = _rows(default_focal(wh) if focal is None else focal, n, None, cam_t)
    b = _rows(size, n, None, cam_t)
    c = _rows(center, n, 2, cam_t)
    bs = 2 * f / cam_t[:, 2]  # = b * s (up to the 1e-9 guard)
    s = (bs - _EPS) / b
    txy = cam_t[:, :2] - 2 * (c - wh / 2) / bs[:, None]
    return torch.cat([s[:, None], txy], dim=-1)


def project_points(
    points: torch.Tensor,
    cam_t: torch.Tensor,
    image_wh: torch.Tensor | tuple[float, float],
    focal: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Pinhole projection of body points (N, K, 3) translated by cam_t (N, 3) -> pixels (N, K, 2).

    OpenCV camera (x right, y down, z forward), principal point at the image centre.
    """
    n = points.shape[0]
    wh = _rows(image_wh, n, 2, points)
    f = _rows(default_focal(wh) if focal is None else focal, n, None, points)
    p = points.float() + cam_t.float()[:, None, :]
    return f[:, None, None] * p[..., :2] / p[..., 2:3] + wh[:, None, :] / 2
