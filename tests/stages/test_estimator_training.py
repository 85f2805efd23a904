"""Estimator training: losses and metrics, a few steps reduce the loss, exact resume, bundled-weights accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hmrflow.stages.mesh.losses import weak_perspective
from hmrflow.stages.mesh.train import EstimatorTrainer, TrainConfig, evaluate_crops, make_batch

#: Fixed held-out check set of the bundled weights (seed never used in training, which uses 0).
CHECK_SEED, CHECK_N = 424242, 32


@pytest.fixture(scope="module")
def body():
    from hmrflow.priors.body_model import load_body_model

    return load_body_model("synthetic")


@pytest.fixture(scope="module")
def small_crops():
    from hmrflow.jobs.train.estimator_data import render_crops

    return render_crops(np.random.default_rng(7), 8, crop_hw=(64, 48))


def test_weak_perspective_known_answer() -> None:
    j = torch.tensor([[[0.2, -0.4, 3.0]]])
    cam = torch.tensor([[0.8, 0.1, 0.3]])
    torch.testing.assert_close(weak_perspective(j, cam), torch.tensor([[[0.8 * 0.3 / 2, 0.8 * -0.1 / 2]]]))


def test_crop_ground_truth_is_consistent(small_crops, body) -> None:
    c = small_crops
    with torch.no_grad():
        j = body(torch.from_numpy(c.rotmats), torch.from_numpy(c.betas), torch.from_numpy(c.cam_t)).joints.numpy()
    np.testing.assert_allclose(j, c.joints3d, atol=1e-4)
    proj = c.focal[:, None, None] * j[..., :2] / j[..., 2:] + np.array([320.0, 240.0])
    np.testing.assert_allclose((proj - c.center[:, None]) / c.size[:, None, None], c.joints2d, atol=1e-4)
    assert c.images.shape == (8, 64, 48, 3) and c.images.dtype == np.uint8
    assert np.abs(c.joints2d).max() < 0.7  # the person is inside the (1.2x context) crop


def _batch_loss(trainer: EstimatorTrainer, images, targets) -> float:
    from hmrflow.stages.mesh.losses import estimator_losses

    trainer.model.eval()
    with torch.no_grad():
        return float(estimator_losses(trainer.model(images), targets, trainer.body_model, trainer.cfg.losses)["total"])


def test_three_steps_reduce_the_loss(small_crops, body) -> None:
    cfg = TrainConfig(image_size=(64, 48), batch_size=8, lr=1e-3, warmup_steps=1, augment=False)
    tr = EstimatorTrainer(cfg, body, total_steps=3)
    images, targets = make_batch(small_crops, np.arange(8))
    before = _batch_loss(tr, images, targets)
    for _ in range(3):
        tr.train_step(images, targets)
    assert tr.step == 3
    assert _batch_loss(tr, images, targets) < 0.9 * before


def test_resume_restores_step_optimizer_and_continues_identically(small_crops, body, tmp_path) -> None:
    cfg = TrainConfig(image_size=(64, 48), batch_size=4, lr=1e-3, warmup_steps=2)
    a = EstimatorTrainer(cfg, body, total_steps=10)
    batches = [make_batch(small_crops, np.arange(i, i + 4), augment=True, gen=a.gen) for i in (0, 4)]
    a.train_step(*batches[0])
    a.epoch = 1
    a.save(tmp_path / "last.pt")
    b = EstimatorTrainer(cfg, body, total_steps=10)
    b.load(tmp_path / "last.pt")
    assert (b.step, b.epoch) == (1, 1)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k, v in sa["state"].items():
        torch.testing.assert_close(v["exp_avg"], sb["state"][k]["exp_avg"], rtol=0, atol=0)
    assert torch.equal(a.gen.get_state(), b.gen.get_state())
    a.train_step(*batches[1])
    b.train_step(*batches[1])
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_bundled_weights_beat_an_untrained_model(body) -> None:
    from hmrflow.jobs.train.estimator_data import render_crops
    from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator
    from hmrflow.stages.mesh.model import build_estimator

    path = bundled_weights_path("tiny")
    if not path.is_file():
        pytest.skip("bundled tiny weights not built")
    model, _ = load_estimator(path, "tiny")
    crops = render_crops(np.random.default_rng(CHECK_SEED), CHECK_N, crop_hw=model.image_size)
    trained = evaluate_crops(model, crops, body, batch_size=32)
    torch.manual_seed(0)
    untrained = evaluate_crops(build_estimator("tiny", model.image_size), crops, body, batch_size=32)
    # measured on these 32 crops: bundled PA-MPJPE 69 mm / MPJPE 148 mm, untrained 186 / 297 mm
    assert untrained["pa_mpjpe_mm"] > 150
    assert trained["pa_mpjpe_mm"] < 100
    assert trained["mpjpe_mm"] < 0.6 * untrained["mpjpe_mm"]
    # confidence falls as the error grows (measured correlation -0.23)
    conf, err = trained["confidence"], trained["per_crop_mpjpe_mm"]
    assert np.corrcoef(conf, err)[0, 1] < 0
    meta = json.loads((path.parent / "validation.json").read_text())
    assert meta["held_out_crops"]["seed"] != TrainConfig().seed


def test_ray_frame_targets_undo_the_ray_rotation(small_crops) -> None:
    from hmrflow.stages.mesh.stage import ray_rotation
    from hmrflow.stages.mesh.train import FULL_IMAGE_WH

    _, cam = make_batch(small_crops, np.arange(8), ray_frame=False)
    _, ray = make_batch(small_crops, np.arange(8), ray_frame=True)
    r = ray_rotation(torch.from_numpy(small_crops.center), FULL_IMAGE_WH, torch.from_numpy(small_crops.focal))
    torch.testing.assert_close(r @ ray.rotmats[:, 0], cam.rotmats[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ray.joints3d @ r.transpose(1, 2), cam.joints3d, atol=1e-5, rtol=0)
    torch.testing.assert_close(ray.rotmats[:, 1:], cam.rotmats[:, 1:])


def test_merge_aware_training_makes_the_merged_model_better(body) -> None:
    """The same 5 steps from the bundled weights on the same batch: with the merged-copy loss
    on, a merge the bundled weights were never trained for (blocks 2..5 into one, span 4) fits
    the batch clearly better than after training only the full model (random-init models are
    too weak for merges to matter, hence trained weights)."""
    from hmrflow.jobs.train.estimator_data import render_crops
    from hmrflow.stages.mesh.accel.eclm import apply_eclm, deepest_plan
    from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator
    from hmrflow.stages.mesh.losses import estimator_losses

    crops = render_crops(np.random.default_rng(7), 16, crop_hw=(128, 96))
    images, targets = make_batch(crops, np.arange(16))
    plan = deepest_plan(6, (4,))
    assert plan.groups == ((2, 5),)

    def merged_loss(merge_aware: float) -> float:
        model, _ = load_estimator(bundled_weights_path("tiny"), "tiny", (128, 96))
        cfg = TrainConfig(
            image_size=(128, 96),
            batch_size=16,
            lr=3e-4,
            warmup_steps=1,
            augment=False,
            merge_aware=merge_aware,
            merge_spans=(4,),
            merge_p=1.0,
        )
        tr = EstimatorTrainer(cfg, body, total_steps=5, model=model)
        for _ in range(5):
            res = tr.train_step(images, targets)
        assert ("merged_total" in res) == (merge_aware > 0)
        tr.model.eval()
        with torch.no_grad(), apply_eclm(tr.model, plan):
            return float(estimator_losses(tr.model(images), targets, body, cfg.losses)["total"])

    aware, plain = merged_loss(1.0), merged_loss(0.0)
    assert aware < 0.8 * plain, (aware, plain)


def test_fastmetro_steps_reduce_the_mesh_losses(small_crops, body) -> None:
    from hmrflow.stages.mesh.losses import estimator_losses

    cfg = TrainConfig(image_size=(64, 48), head="fastmetro", batch_size=8, lr=2e-3, warmup_steps=1, augment=False)
    tr = EstimatorTrainer(cfg, body, total_steps=4)
    images, targets = make_batch(small_crops, np.arange(8))

    def terms() -> dict[str, float]:
        tr.model.eval()
        with torch.no_grad():
            t = estimator_losses(tr.model(images), targets, body, cfg.losses)
        return {k: float(v.mean()) for k, v in t.items()}

    before = terms()
    assert {"vertices", "mesh_joints3d", "mesh_joints2d", "pve"} <= set(before)
    for _ in range(4):
        tr.train_step(images, targets)
    after = terms()
    assert after["total"] < 0.9 * before["total"] and after["vertices"] < before["vertices"], (before, after)


def test_train_cli_fastmetro_head_from_a_backbone(tmp_path) -> None:
    """``hmrflow train estimator --head fastmetro --init-backbone W``: the backbone is W's, the
    head fresh; the weights file, train_config.json and validation.json name the head and its mesh figures."""
    from hmrflow.jobs import cli
    from hmrflow.stages.mesh.checkpoint import load_estimator, save_estimator
    from hmrflow.stages.mesh.model import build_estimator

    torch.manual_seed(5)  # not the trainer's seed: its own fresh backbone differs from this one
    src = save_estimator(build_estimator("tiny", (64, 48)), tmp_path / "src.safetensors")
    work = tmp_path / "w"
    args = ["train", "estimator", "--work-dir", str(work), "--head", "fastmetro", "--image-size", "64x48"]
    args += ["--crops", "16", "--val-crops", "8", "--val-every-crops", "8", "--epochs", "1", "--steps-per-epoch", "1"]
    args += ["--batch-size", "4", "--init-backbone", str(src), "--no-attention-mask"]
    assert cli.main(args) == 0
    out, _ = load_estimator(work / "final" / "estimator_tiny_fastmetro.safetensors")
    assert out.spec.head_kind == "fastmetro" and out.spec.head.attention_mask is False
    ref, _ = load_estimator(src)
    # one step of AdamW moved the backbone by at most lr per weight, from the source's
    w_out, w_ref = out.backbone.patch_embed.proj.weight, ref.backbone.patch_embed.proj.weight
    assert (w_out - w_ref).abs().max() < 5e-3
    torch.manual_seed(0)
    fresh = build_estimator("tiny", (64, 48)).backbone.patch_embed.proj.weight
    assert (fresh - w_ref).abs().max() > 0.05
    cfg = json.loads((work / "final" / "train_config.json").read_text())
    assert cfg["head"] == "fastmetro" and cfg["attention_mask"] is False and cfg["init_backbone"] == str(src)
    val = json.loads((work / "final" / "validation.json").read_text())["held_out_crops"]
    assert {"mesh_pve_mm", "mesh_pa_mpjpe_mm", "pve_mm"} <= set(val)
