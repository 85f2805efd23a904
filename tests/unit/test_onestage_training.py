"""Training data and loop of the one-stage estimator: rendered people with bodies, shrink
augmentation that keeps the geometry exact, a short run that learns, the CLI writing weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hmrflow.jobs.train.onestage_data import PeopleFrames, render_people_frames


@pytest.fixture(scope="module")
def frames() -> PeopleFrames:
    return render_people_frames(np.random.default_rng(123), 4, size=(512, 384), family="mixed")


def test_rendered_people_project_into_their_boxes(frames: PeopleFrames) -> None:
    assert frames.images.shape == (4, 384, 512, 3) and frames.present.any()
    for i, k in zip(*np.nonzero(frames.present)):
        uvw = frames.joints[i, k] @ frames.K[i].T
        uv = uvw[:, :2] / uvw[:, 2:]
        x0, y0, x1, y1 = frames.boxes[i, k]
        # joints sit inside the visible-pixel box (a few px of slack for joints under the skin)
        inside = (uv[:, 0] > x0 - 8) & (uv[:, 0] < x1 + 8) & (uv[:, 1] > y0 - 8) & (uv[:, 1] < y1 + 8)
        if frames.visible_frac[i, k] > 0.95:
            assert inside.all()


def test_shrunk_batches_keep_exact_geometry(frames: PeopleFrames) -> None:
    from hmrflow.jobs.train.onestage import build_batch
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.onestage.losses import pelvis_camera
    from hmrflow.stages.onestage.model import SIZES

    spec = SIZES["tiny"]
    body = load_body_model("synthetic", device="cpu")
    images, targets, K, (conf, scale), info = build_batch(
        frames, np.arange(4), spec, body, np.random.default_rng(0), zoom=1.0
    )
    assert images.shape == (4, 3, 384, 512) and info["people"] == int(frames.present.sum())
    for i, t in enumerate(targets):
        if not len(t):
            continue
        # the pelvis back-projected from its target (uv, depth) with the shrunk K is the true pelvis
        pel = pelvis_camera(t.root_uv, t.log_depth, K[i].expand(len(t), 3, 3), (512, 384))
        torch.testing.assert_close(pel, t.joints[:, 0], atol=1e-4, rtol=1e-4)
        assert (t.boxes >= 0).all() and (t.boxes <= 1).all()
        # shrunk: the box sizes are smaller than in the frame
        full = frames.boxes[i][frames.present[i]]
        assert (t.boxes[:, 2] * 512 <= torch.from_numpy(full[:, 2] - full[:, 0]) + 1e-3).all()
        assert conf[i].sum() > 0 and ((scale[i] > 0) == (conf[i] > 0)).all()


def test_a_short_run_on_one_batch_learns(frames: PeopleFrames) -> None:
    from hmrflow.jobs.train.onestage import build_batch, token_targets
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.stages.onestage.losses import onestage_losses
    from hmrflow.stages.onestage.model import SIZES, OneStageEstimator

    torch.manual_seed(0)
    spec = SIZES["tiny"]
    body = load_body_model("synthetic", device="cpu")
    model = OneStageEstimator(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    images, targets, K, maps, _ = build_batch(frames, np.arange(4), spec, body, np.random.default_rng(0), zoom=0.0)
    losses = []
    for _ in range(12):
        out = model(images, scale_targets=maps)
        loss, _ = onestage_losses(out, targets, K, maps, token_targets(out.tokens, targets, spec), body, (512, 384))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_train_cli_writes_weights_and_config(tmp_path, monkeypatch) -> None:
    from hmrflow.jobs.cli import main
    from hmrflow.stages.onestage.weights import load_onestage

    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "train",
            "onestage",
            "--work-dir",
            "w",
            "--frames",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--save-every",
            "1",
            "--val-frames",
            "2",
        ]
    )
    assert rc == 0
    model = load_onestage(tmp_path / "w" / "final" / "onestage_tiny.safetensors")
    assert model.spec.name == "tiny"
    cfg = json.loads((tmp_path / "w" / "final" / "train_config.json").read_text())
    assert cfg["steps_done"] == 2 and cfg["init"].startswith("estimator_tiny") and len(cfg["history"]) == 2
    val = json.loads((tmp_path / "w" / "final" / "validation.json").read_text())
    assert set(val) == {"note", "mixed", "overlap", "far"} and val["far"]["all_high"]["frames"] == 2
    # resuming a finished run trains no further and keeps the step count
    rc = main(
        [
            "train",
            "onestage",
            "--work-dir",
            "w",
            "--frames",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--resume",
            "--val-frames",
            "0",
        ]
    )
    assert rc == 0 and json.loads((tmp_path / "w" / "final" / "train_config.json").read_text())["steps_done"] == 2
