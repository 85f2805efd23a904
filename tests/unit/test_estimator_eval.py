"""Exact person masks for the per-frame estimator evaluation."""

from __future__ import annotations

import numpy as np

from hmrflow.jobs.bench.estimator_eval import _gt_box_masks
from hmrflow.pipeline.types import MASK_RES


def test_gt_box_masks_follow_the_instance_map() -> None:
    inst = np.full((2, 40, 60), -1, np.int8)
    inst[0, 10:30, 20:30] = 1  # person 1 in frame 0: x 20..30, y 10..30
    inst[1, 0:40, 0:60] = 0  # person 0 fills frame 1
    # pixel-centre coordinates (the project's convention): pixels 20..29 span x 19.5..29.5
    boxes = np.array([[19.5, 9.5, 29.5, 29.5], [9.5, 9.5, 29.5, 29.5], [-0.5, -0.5, 59.5, 39.5]], np.float32)
    m = _gt_box_masks(inst, np.array([0, 0, 1]), np.array([1, 1, 1]), boxes)
    assert m.shape == (3, MASK_RES, MASK_RES) and m.dtype == bool
    assert m[0].all()  # the box is exactly the person
    assert (
        abs(m[1].mean() - 0.5) < 0.05 and m[1][:, MASK_RES // 2 + 1 :].all() and not m[1][:, : MASK_RES // 2 - 1].any()
    )
    assert not m[2].any()  # person 1 is not in frame 1
    assert _gt_box_masks(inst, np.zeros(0, int), np.zeros(0, int), np.zeros((0, 4), np.float32)).shape == (
        0,
        MASK_RES,
        MASK_RES,
    )
