"""Crops (aspect handling, marker centring, padding, normalisation, masks) and the
weak-perspective <-> full-image camera conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.stages.mesh.camera import cam_crop_to_full, cam_full_to_crop, default_focal, project_points
from hmrflow.stages.mesh.crop import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropBoxes,
    crop_boxes_from_xyxy,
    crop_images,
    crop_masks,
    crop_to_image,
    image_to_crop,
    make_crops,
)

HW = (256, 192)


def _unnormalise(crops: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (crops * std + mean) * 255.0


def _centroid(channel: torch.Tensor) -> tuple[float, float]:
    """Intensity-weighted centroid (x, y) in continuous pixel coordinates of a (H, W) image."""
    h, w = channel.shape
    wgt = channel.clamp_min(0)
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    tot = wgt.sum()
    return float((wgt.sum(0) * xs).sum() / tot), float((wgt.sum(1) * ys).sum() / tot)


def test_aspect_expansion_and_rescale() -> None:
    boxes = np.array([[0, 0, 100, 100], [10, 20, 40, 220], [0, 0, 300, 100]], np.float32)
    cb = crop_boxes_from_xyxy(boxes, HW, rescale=1.0)
    # wide boxes grow in height to 4:3 (h:w), tall boxes keep their height
    assert torch.allclose(cb.size, torch.tensor([100 * 256 / 192, 200.0, 300 * 256 / 192]))
    assert torch.allclose(cb.center, torch.tensor([[50.0, 50.0], [25.0, 120.0], [150.0, 50.0]]))
    cb12 = crop_boxes_from_xyxy(boxes, HW, rescale=1.2)
    assert torch.allclose(cb12.size, cb.size * 1.2)
    # the crop region (size x 0.75 size) always contains the rescaled box
    w = (boxes[:, 2] - boxes[:, 0]) * 1.2
    assert (cb12.size.numpy() * 192 / 256 >= w - 1e-4).all()


def test_crop_image_affine_round_trip() -> None:
    cb = CropBoxes(center=torch.tensor([[100.0, 50.0], [10.0, 400.0]]), size=torch.tensor([256.0, 512.0]))
    pts = torch.rand(2, 7, 2) * torch.tensor([192.0, 256.0])
    assert torch.allclose(image_to_crop(crop_to_image(pts, cb, HW), cb, HW), pts, atol=1e-4)
    centre = crop_to_image(torch.tensor([[[96.0, 128.0]]]).expand(2, 1, 2), cb, HW)
    assert torch.allclose(centre[:, 0], cb.center)
    corner = crop_to_image(torch.zeros(2, 1, 2), cb, HW)  # top-left corner of the crop
    assert torch.allclose(corner[:, 0], cb.center - torch.stack([cb.size * 0.375, cb.size * 0.5], -1))


def test_marker_lands_at_crop_centre_with_frame_index() -> None:
    frames = np.zeros((2, 480, 640, 3), np.uint8)
    frames[0, 198:202, 298:302, 0] = 255  # red marker centred at (300, 200), frame 0
    frames[1, 98:102, 498:502, 1] = 255  # green marker centred at (500, 100), frame 1
    boxes = np.array([[480, 40, 520, 160], [270, 150, 330, 250], [400, 0, 600, 200]], np.float32)
    crops = make_crops(frames, np.array([1, 0, 1]), boxes)
    assert crops.images.shape == (3, 3, 256, 192)
    rgb = _unnormalise(crops.images)
    for i, ch in ((0, 1), (1, 0), (2, 1)):
        cx, cy = _centroid(rgb[i, ch])
        assert cx == pytest.approx(96.0, abs=0.05) and cy == pytest.approx(128.0, abs=0.05)
        other = rgb[i, 1 - ch]
        assert other.abs().max() < 1.0  # the other colour is absent: right frame, RGB order


def test_padding_outside_image_is_black_and_inside_keeps_values() -> None:
    frames = np.full((1, 100, 120, 3), 128, np.uint8)
    boxes = np.array([[-60, -80, 60, 80]], np.float32)  # centred on the top-left corner
    crops = crop_images(frames, np.zeros(1, np.int64), crop_boxes_from_xyxy(boxes, HW, 1.0), HW)
    rgb = _unnormalise(crops)[0]
    # crop centre (96, 128) maps to image (0, 0): left/top halves are outside -> black
    assert rgb[:, :120, :90].abs().max() < 1e-3
    assert rgb[:, 135:, 100:].sub(128).abs().max() < 1e-3
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(crops[0, :, 200, 150], expected, atol=1e-5)


def test_large_box_uses_antialiased_pyramid() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(1, 1200, 1000, 3), dtype=np.uint8)
    frame[0, 580:620, 480:520] = 255  # white 40 px marker at (500, 600)
    boxes = np.array([[300, 200, 700, 1000]], np.float32)  # 800 px tall -> about 4x shrink
    cb = crop_boxes_from_xyxy(boxes, HW, 1.0)
    smooth = crop_images(frame, np.zeros(1), cb, HW, antialias=True)
    sharp = crop_images(frame, np.zeros(1), cb, HW, antialias=False)
    # noise is averaged away by the pyramid, not by plain bilinear sampling
    assert _unnormalise(smooth)[0, :, :100].std() < 0.6 * _unnormalise(sharp)[0, :, :100].std()
    bright = (_unnormalise(smooth)[0].mean(0) > 200).float()
    cx, cy = _centroid(bright)
    assert cx == pytest.approx(96.0, abs=0.6) and cy == pytest.approx(128.0, abs=0.6)
    # boxes of different pyramid levels in one frame, one reaching past the frame's edge
    boxes2 = np.array([[300, 200, 700, 1000], [470, 570, 530, 630], [-500, 700, 600, 1700]], np.float32)
    both = crop_images(frame, np.zeros(3), crop_boxes_from_xyxy(boxes2, HW, 1.0), HW)
    assert torch.allclose(both[0], smooth[0], atol=1e-4)
    cx, cy = _centroid((_unnormalise(both)[1].mean(0) > 200).float())
    assert cx == pytest.approx(96.0, abs=0.5) and cy == pytest.approx(128.0, abs=0.5)  # noisy edges
    far = _unnormalise(both)[2]
    assert far[:, 200:, :].abs().max() < 1e-3  # below the frame: black


def test_crop_errors() -> None:
    frames = np.zeros((1, 10, 10, 3), np.uint8)
    cb = crop_boxes_from_xyxy(np.array([[0, 0, 5, 5]]), HW)
    with pytest.raises(IndexError):
        crop_images(frames, np.array([1]), cb, HW)
    with pytest.raises(ValueError):
        crop_images(frames[..., 0], np.array([0]), cb, HW)


def test_masks_crop_to_token_cells() -> None:
    # a detection box of exactly the crop aspect with rescale 1: crop == box
    boxes = np.array([[100, 100, 292, 356]], np.float32)
    masks = np.zeros((1, 32, 32), bool)
    masks[0, :, :16] = True  # the person fills the left half of the box
    cb = crop_boxes_from_xyxy(boxes, HW, rescale=1.0)
    tm = crop_masks(masks, boxes, cb, HW, (16, 12))
    assert tm.shape == (1, 16, 12)
    assert torch.allclose(tm[0, :, :5], torch.ones(16, 5), atol=1e-6)
    assert torch.allclose(tm[0, :, 7:], torch.zeros(16, 5), atol=1e-6)
    assert (tm[0, :, 5] > 0.8).all() and (tm[0, :, 6] < 0.2).all()
    assert torch.allclose(tm[0, :, 5] + tm[0, :, 6], torch.ones(16), atol=1e-5)
    # with context around the box, cells outside the detection box are empty
    wide = crop_boxes_from_xyxy(boxes, HW, rescale=1.5)
    tm2 = crop_masks(np.ones((1, 32, 32), bool), boxes, wide, HW, (16, 12))
    assert tm2[0, 0].max() == 0 and tm2[0, -1].max() == 0 and tm2[0, :, 0].max() == 0
    assert tm2[0, 8, 6] == pytest.approx(1.0)
    crops = make_crops(np.zeros((1, 400, 400, 3), np.uint8), np.zeros(1), boxes, masks, rescale=1.0)
    assert crops.token_masks is not None and torch.allclose(crops.token_masks, tm)


# ----------------------------------------------------------------------------- camera
def test_default_focal_and_known_translation() -> None:
    assert float(default_focal((640, 480))) == pytest.approx(5000 / 256 * 640)
    # crop centred in the image, b = 256, s = 1: tz = 2 f / 256, no lateral offset
    cam_t = cam_crop_to_full(
        torch.tensor([[1.0, 0.1, -0.2]]), torch.tensor([[320.0, 240.0]]), torch.tensor([256.0]), (640, 480)
    )
    assert torch.allclose(cam_t, torch.tensor([[0.1, -0.2, 2 * 12500 / 256]]), rtol=1e-6)
    # an off-centre crop shifts tx by 2 (cx - W/2) / (b s)
    cam_t2 = cam_crop_to_full(
        torch.tensor([[0.5, 0.0, 0.0]]), torch.tensor([[420.0, 240.0]]), torch.tensor([200.0]), (640, 480), focal=1000.0
    )
    assert torch.allclose(cam_t2, torch.tensor([[2 * 100 / 100, 0.0, 2 * 1000 / 100]]), rtol=1e-6)


def test_camera_round_trip_and_root_projection() -> None:
    g = torch.Generator().manual_seed(0)
    n = 16
    pred_cam = torch.stack(
        [0.5 + torch.rand(n, generator=g), torch.randn(n, generator=g) * 0.2, torch.randn(n, generator=g) * 0.2], -1
    )
    center = torch.rand(n, 2, generator=g) * torch.tensor([1920.0, 1080.0])
    size = 100 + torch.rand(n, generator=g) * 800
    image_wh = (1920, 1080)
    cam_t = cam_crop_to_full(pred_cam, center, size, image_wh)
    assert (cam_t[:, 2] > 0).all()
    back = cam_full_to_crop(cam_t, center, size, image_wh)
    assert torch.allclose(back, pred_cam, atol=1e-5)
    # the body origin translated by cam_t projects where the weak-perspective crop camera puts it
    px = project_points(torch.zeros(n, 1, 3), cam_t, image_wh)[:, 0]
    expected = center + size[:, None] * pred_cam[:, :1] * pred_cam[:, 1:] / 2
    assert torch.allclose(px, expected, atol=1e-2)
    # ... which is also the crop pixel (W/2 + H s tx / 2, H/2 + H s ty / 2) mapped to the image
    crop_px = torch.tensor([96.0, 128.0]) + 256 * pred_cam[:, :1] * pred_cam[:, 1:] / 2
    via_crop = crop_to_image(crop_px[:, None], CropBoxes(center, size), HW)[:, 0]
    assert torch.allclose(px, via_crop, atol=1e-2)


def test_weak_perspective_matches_perspective_for_a_small_body() -> None:
    """A point 0.5 m off the root projects within a pixel of the weak-perspective prediction
    when the body is far away (tz >> body depth)."""
    pred_cam = torch.tensor([[0.3, 0.0, 0.0]])
    center, size = torch.tensor([[800.0, 500.0]]), torch.tensor([300.0])
    cam_t = cam_crop_to_full(pred_cam, center, size, (1600, 1000))
    point = torch.tensor([[[0.5, -0.5, 0.0]]])
    px = project_points(point, cam_t, (1600, 1000))[0, 0]
    weak = center[0] + size[0] * 0.3 * point[0, 0, :2] / 2
    assert torch.allclose(px, weak, atol=1e-3)
