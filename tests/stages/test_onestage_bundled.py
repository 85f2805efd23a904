"""The bundled one-stage weights: they load, find people in fresh rendered frames, estimate
bodies better than the standing mean, and use high-resolution tokens for small people."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hmrflow.stages.onestage.weights import bundled_weights_path, load_onestage


@pytest.fixture(scope="module")
def model():
    path = bundled_weights_path()
    if not path.is_file():
        pytest.fail(f"{path}: bundled one-stage weights missing from the checkout")
    return load_onestage(path)


@pytest.fixture(scope="module")
def body():
    from hmrflow.priors.body_model import load_body_model

    return load_body_model("synthetic", device="cpu")


def test_bundled_files_describe_the_weights(model) -> None:
    folder = bundled_weights_path().parent
    cfg = json.loads((folder / "train_config.json").read_text())
    val = json.loads((folder / "validation.json").read_text())
    assert cfg["spec"] == json.loads(json.dumps(model.spec.to_dict())) and cfg["steps_done"] > 0
    assert {"mixed", "overlap", "far"} <= set(val) and set(val["far"]) == {
        "adaptive",
        "all_low",
        "all_high",
        "discard_background",
    }


def test_bundled_model_finds_and_estimates_people(model, body) -> None:
    """Fresh frames (a seed no training or validation used): the detections match people and the
    matched bodies are far better than the mean body would be."""
    from hmrflow.jobs.train.onestage_data import render_people_frames
    from hmrflow.jobs.train.onestage_eval import score_frames
    from hmrflow.priors.metrics import pa_mpjpe

    frames = render_people_frames(np.random.default_rng(20261203), 10, family="mixed")
    r = score_frames(model, frames, body)
    assert r["f1"] > 0.4 and r["matched_people"] >= 5, r
    # the standing mean body against the same people: what a model that learned nothing scores
    ok = frames.present & (frames.visible_frac >= 0.3)
    gt = torch.from_numpy(frames.joints[ok])
    mean = body(torch.eye(3).repeat(len(gt), 24, 1, 1), torch.zeros(len(gt), 10), torch.zeros(len(gt), 3)).joints
    baseline = float(pa_mpjpe(mean, gt).mean())
    assert r["pa_mpjpe_mm"] < 0.5 * baseline, (r["pa_mpjpe_mm"], baseline)


def test_scale_head_sends_small_people_to_high_resolution(model) -> None:
    from hmrflow.jobs.train.onestage_data import render_people_frames
    from hmrflow.stages.onestage.weights import letterbox_frames

    far = render_people_frames(np.random.default_rng(777001), 4, family="far")
    x, _ = letterbox_frames(far.images, model.spec)
    with torch.no_grad():
        out = model(x)
    high = ((out.tokens.kind == 2) & out.tokens.valid).sum(1)
    # every far frame with a visible person gets high-resolution tokens, and far fewer tokens than
    # the all-high-resolution set (4 x 192)
    has_people = torch.from_numpy((far.present & (far.visible_frac >= 0.3)).any(1))
    assert (high[has_people] > 0).all(), high
    assert (out.tokens.counts < 0.5 * 4 * model.spec.grid[0] * model.spec.grid[1]).all()


def test_threshold_sweep_agrees_with_a_run_at_that_setting(model, body) -> None:
    """The sweep runs once without NMS and applies NMS and the threshold afterwards; at the
    preset's own setting it must give what a run at that setting gives."""
    from hmrflow.jobs.train.onestage_data import render_people_frames
    from hmrflow.jobs.train.onestage_eval import preset_detect, score_frames, threshold_sweep

    frames = render_people_frames(np.random.default_rng(5150), 6, family="overlap")
    cfg = preset_detect()
    sweep = threshold_sweep(model, frames, body, thresholds=(0.3, cfg.score_threshold), nms_ious=(cfg.nms_iou, 0.9))
    assert sweep[(cfg.score_threshold, cfg.nms_iou)] == pytest.approx(score_frames(model, frames, body)["f1"])
    assert all(0.0 <= v <= 1.0 for v in sweep.values())
