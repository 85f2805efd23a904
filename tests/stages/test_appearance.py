"""Appearance descriptors: colour science known answers, unknown rows, and one person closer to
themselves than to someone else on rendered frames (detections from the bundled detector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.pipeline.boxes import box_iou, match_iou
from hmrflow.pipeline.types import APPEARANCE_DIM, MASK_RES
from hmrflow.stages.track.appearance import (
    BANDS,
    HUE_BINS,
    L_BINS,
    PER_BAND,
    appearance_distance,
    describe,
    srgb_to_lab,
)


def test_lab_known_values() -> None:
    lab = srgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(lab[0].numpy(), [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[1].numpy(), [0.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[2].numpy(), [53.24, 80.09, 67.20], atol=0.1)  # sRGB red (D65)
    assert abs(float(lab[3, 1])) < 0.05 and abs(float(lab[3, 2])) < 0.05  # grey has no chroma


def _person_frame(shirt: tuple[int, int, int], trousers: tuple[int, int, int], bg: int = 40) -> np.ndarray:
    img = np.full((120, 80, 3), bg, np.uint8)
    img[10:30, 30:50] = (200, 160, 130)  # head
    img[30:70, 25:55] = shirt
    img[70:115, 28:52] = trousers
    return img


def test_descriptor_layout_and_mask() -> None:
    img = _person_frame((200, 30, 30), (20, 20, 160))
    box = np.array([[25.0, 10.0, 55.0, 115.0]], np.float32)
    full = np.ones((1, MASK_RES, MASK_RES), bool)
    d = describe(img[None], np.array([0]), box, full)
    assert d.shape == (1, APPEARANCE_DIM) and d.dtype == np.float32
    for k in range(len(BANDS)):
        o = k * PER_BAND
        assert d[0, o : o + HUE_BINS].sum() == pytest.approx(1.0, abs=1e-4)
        assert d[0, o + HUE_BINS : o + HUE_BINS + L_BINS].sum() == pytest.approx(1.0, abs=1e-4)
        assert d[0, o + PER_BAND - 1] > 0.5  # the box is mostly person
    # an empty mask: nothing owned, an all-zero "unknown" row whose distances are NaN
    empty = describe(img[None], np.array([0]), box, np.zeros((1, MASK_RES, MASK_RES), bool))
    assert not empty.any()
    assert np.isnan(appearance_distance(empty, d)).all()


def test_colours_decide_the_distance() -> None:
    box = np.array([[25.0, 10.0, 55.0, 115.0]] * 4, np.float32)
    imgs = np.stack(
        [
            _person_frame((200, 30, 30), (20, 20, 160)),  # red shirt, blue trousers
            _person_frame((150, 20, 20), (20, 20, 120)),  # the same clothes in a darker light
            _person_frame((30, 160, 40), (20, 20, 160)),  # green shirt
            _person_frame((30, 160, 40), (200, 200, 40)),  # green shirt, yellow trousers
        ]
    )
    d = describe(imgs, np.arange(4), box, np.ones((4, MASK_RES, MASK_RES), bool))
    dist = appearance_distance(d, d)
    assert np.allclose(np.diag(dist), 0.0, atol=1e-3)
    assert dist[0, 1] < dist[0, 2] < dist[0, 3]  # lighting < one garment < two garments


@pytest.fixture(scope="module")
def crowded_rows():
    """Detections of a rendered 4-person clip matched to its ground-truth people."""
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec
    from hmrflow.pipeline.config import DetectConfig
    from hmrflow.pipeline.types import FrameBatch
    from hmrflow.stages.detect.stage import DetectStage, bundled_weights_path

    if not bundled_weights_path().is_file():
        pytest.skip("no bundled detector weights")
    import tempfile
    from pathlib import Path

    import av

    with tempfile.TemporaryDirectory() as tmp:
        spec = SceneSpec(name="app", seed=21, people=4, seconds=3.0, width=480, height=360, walkers=0.5)
        d = render_clip(spec, tmp, progress=False)
        gt = dict(np.load(Path(d) / "gt.npz"))
        with av.open(str(Path(d) / "app.mp4")) as c:
            imgs = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])[::3]
    fi = np.arange(0, 3 * len(imgs), 3)
    det = DetectStage(DetectConfig(device="cpu"))(FrameBatch("app", fi, fi / 30.0, imgs)).detections
    pid = np.full(len(det), -1)
    for f in np.unique(det.frame_idx):
        r = np.flatnonzero(det.frame_idx == f)
        ok = np.flatnonzero(np.isfinite(gt["boxes"][f]).all(1) & (gt["visible_frac"][f] > 0.6))
        for a, b in match_iou(box_iou(det.boxes_xyxy[r], gt["boxes"][f][ok]), 0.5):
            pid[r[a]] = ok[b]
    keep = pid >= 0
    return det.appearance[keep], pid[keep], det.frame_idx[keep]


def test_one_person_is_closer_to_themselves_than_to_others(crowded_rows) -> None:
    app, pid, frame = crowded_rows
    assert len(np.unique(pid)) >= 3
    d = appearance_distance(app, app)
    same = (pid[:, None] == pid[None]) & (frame[:, None] != frame[None])
    other = pid[:, None] != pid[None]
    assert np.nanmedian(d[same]) < 0.6 * np.nanmedian(d[other])
    # nearest neighbour in another frame is the same person for most detections (chance: about
    # one in three; mixed views of people who touch are the misses)
    dn = np.where(frame[:, None] == frame[None], np.inf, np.nan_to_num(d, nan=np.inf))
    assert (pid[dn.argmin(1)] == pid).mean() > 0.85
