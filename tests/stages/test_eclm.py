"""ECLM: layer-merge rule, exact removal, error-constrained search, merged checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hmrflow.stages.mesh.accel.eclm import (
    CalibrationSet,
    ECLMConfig,
    ECLMPlan,
    apply_eclm,
    linear_cka,
    merge_blocks,
    search_plan,
)
from hmrflow.stages.mesh.accel.flops import model_flops
from hmrflow.stages.mesh.accel.tome import MaskToMeConfig, apply_mask_tome
from hmrflow.stages.mesh.checkpoint import load_estimator, save_estimator
from hmrflow.stages.mesh.model import build_estimator

IMG = (64, 48)


@dataclass
class _Joints:
    joints: torch.Tensor


class FakeBody(nn.Module):
    """Stand-in body model: joints from the rotations' first columns and the betas (fast)."""

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor) -> _Joints:
        return _Joints(0.3 * rotmats[..., 0] + 0.05 * betas[:, :3, None].transpose(1, 2))


@pytest.fixture()
def model():
    torch.manual_seed(0)
    m = build_estimator("tiny", IMG).eval()
    with torch.no_grad():  # larger readouts so merges visibly change the joints
        for lin in (m.head.decpose, m.head.decshape):
            lin.weight.mul_(100.0)
    return m


@pytest.fixture()
def calib():
    g = torch.Generator().manual_seed(3)
    return CalibrationSet(torch.randn(12, 3, *IMG, generator=g), 0.3 * torch.randn(12, 24, 3, generator=g))


def test_merge_rule_keeps_base_and_adds_differences(model):
    blocks = [model.backbone.blocks[i] for i in (1, 2, 3)]
    merged = merge_blocks(blocks)
    w = [b.mlp.fc1.weight for b in blocks]
    assert torch.allclose(merged.mlp.fc1.weight, w[0] + (w[1] - w[0]) + (w[2] - w[0]), atol=1e-6)
    # a pair collapses to the second block's parameters exactly
    pair = merge_blocks(blocks[:2])
    assert torch.equal(pair.attn.qkv.weight, blocks[1].attn.qkv.weight)
    assert merged.mlp.fc1.weight.data_ptr() != w[0].data_ptr()  # a copy, inputs untouched


def test_plan_groups_and_json():
    plan = ECLMPlan(6, ((4, 5), (1, 3)))
    assert plan.groups == ((1, 3), (4, 5)) and plan.depth == 3
    assert plan.block_groups() == [[0], [1, 2, 3], [4, 5]]
    assert ECLMPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError):
        ECLMPlan(6, ((1, 3), (3, 4)))


def test_apply_reduces_depth_and_flops_and_remove_restores_exactly(model):
    x = torch.randn(2, 3, *IMG)
    with torch.inference_mode():
        base = model(x)
    flops0 = model_flops(model).total
    handle = apply_eclm(model, ECLMPlan(6, ((2, 3), (4, 5))))
    assert len(model.backbone.blocks) == 4
    assert model_flops(model).total < flops0
    with torch.inference_mode():
        merged = model(x)
    assert not torch.equal(merged.pose6d, base.pose6d)
    handle.remove()
    with torch.inference_mode():
        after = model(x)
    assert len(model.backbone.blocks) == 6 and torch.equal(after.pose6d, base.pose6d)


def test_impossible_budget_merges_nothing(model, calib):
    res = search_plan(model, FakeBody(), calib, ECLMConfig(eps_mm=-1e6, batch_size=16))
    assert res.plan.groups == () and res.plan.depth == 6
    assert res.steps and not any(s.accepted for s in res.steps)
    assert res.final == res.baseline
    assert len(model.backbone.blocks) == 6  # the search leaves the model as it was


def test_generous_budget_accepts_and_reduces_depth_and_flops(model, calib):
    res = search_plan(model, FakeBody(), calib, ECLMConfig(eps_mm=1e6, batch_size=16))
    # walk from the end: (4,5) accepted, then (2,3); block 0 (and hence (0,1)) kept
    assert res.plan.groups == ((2, 3), (4, 5)) and res.plan.depth == 4
    assert [s.group for s in res.steps] == [(4, 5), (2, 3)]
    flops0 = model_flops(model).total
    with apply_eclm(model, res.plan):
        assert model_flops(model).total < flops0


def test_budget_is_respected(model, calib):
    full = search_plan(model, FakeBody(), calib, ECLMConfig(eps_mm=1e6, batch_size=16))
    incs = [s.increase_mm for s in full.steps]
    eps = incs[0] - 1e-6  # just below the first merge's increase: it must be rejected
    res = search_plan(model, FakeBody(), calib, ECLMConfig(eps_mm=eps, batch_size=16))
    assert (4, 5) not in res.plan.groups
    assert all(s.increase_mm <= eps for s in res.steps if s.accepted)
    # nothing accepted = no change; otherwise the cumulative increase is within the budget
    assert res.final["mpjpe_mm"] - res.baseline["mpjpe_mm"] <= max(eps, 0.0)


def test_merged_checkpoint_loads_without_calibration(model, tmp_path):
    plan = ECLMPlan(6, ((3, 5),))
    x = torch.randn(2, 3, *IMG)
    with apply_eclm(model, plan):
        with torch.inference_mode():
            ref = model(x)
        path = save_estimator(model, tmp_path / "fast.safetensors", plan=plan, report={"note": "test"})
    loaded, got_plan = load_estimator(path)
    assert got_plan == plan and len(loaded.backbone.blocks) == 4
    with torch.inference_mode():
        out = loaded(x)
    assert torch.equal(out.pose6d, ref.pose6d)
    # Mask-ToMe composes with the merged model
    with apply_mask_tome(loaded, MaskToMeConfig(r=2)), torch.inference_mode():
        assert loaded(x).pose6d.shape == (2, 24, 6)


def test_plain_checkpoint_spec_inferred(model, tmp_path):
    from hmrflow.pipeline.checkpoints import save_state_dict

    path = save_state_dict(model.state_dict(), tmp_path / "plain.safetensors")
    loaded, plan = load_estimator(path)
    assert plan is None and loaded.image_size == IMG and len(loaded.backbone.blocks) == 6


def test_linear_cka_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(500, 8, generator=g)) < 0.1


def test_merged_checkpoint_fp16_storage(model, tmp_path):
    plan = ECLMPlan(6, ((4, 5),))
    x = torch.randn(2, 3, *IMG)
    with apply_eclm(model, plan):
        with torch.inference_mode():
            ref = model(x)
        p32 = save_estimator(model, tmp_path / "a.safetensors", plan=plan)
        p16 = save_estimator(model, tmp_path / "b.safetensors", dtype=torch.float16, plan=plan)
    assert p16.stat().st_size < 0.55 * p32.stat().st_size
    loaded, got_plan = load_estimator(p16)
    assert got_plan == plan and next(loaded.parameters()).dtype == torch.float32
    with apply_eclm(model, plan):
        want = {k: v.half().float() for k, v in model.state_dict().items()}
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    with torch.inference_mode():
        assert loaded(x).pose6d.shape == ref.pose6d.shape


def test_differentiable_merged_forward_equals_applied_plan_and_reaches_every_block(model):
    from hmrflow.stages.mesh.accel.eclm import forward_features_merged

    plan = ECLMPlan(6, ((1, 2), (3, 5)))
    x = torch.randn(3, 3, *IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with apply_eclm(model, plan):
            want = model.backbone.forward_features(x)
        got = forward_features_merged(model.backbone, x, plan)
    assert torch.allclose(got, want, atol=1e-5)
    # gradients reach the blocks the merged weights depend on: all three of the span-3 group
    # (theta_4 + theta_5 - theta_3), but not block 1 of the pair, whose LaCo merge is theta_2 exactly
    forward_features_merged(model.backbone, x, plan).pow(2).mean().backward()
    grads = [blk.mlp.fc1.weight.grad for blk in model.backbone.blocks]
    for i in (0, 2, 3, 4, 5):
        assert grads[i] is not None and grads[i].abs().sum() > 0, f"block {i} got no gradient"
    assert grads[1] is None or grads[1].abs().sum() == 0
    with pytest.raises(ValueError, match="depth"):
        forward_features_merged(model.backbone, x, ECLMPlan(4, ((1, 2),)))


def test_sampled_plans_stay_in_the_searched_family():
    from hmrflow.stages.mesh.accel.eclm import deepest_plan, sample_plan

    g = torch.Generator().manual_seed(0)
    plans = [sample_plan(6, g, spans=(2, 3), keep_first=1) for _ in range(300)]
    seen = {p.groups for p in plans}
    assert ((1, 2), (3, 5)) in seen and () in seen and len(seen) > 8
    for p in plans:
        assert all(a >= 1 and (b - a + 1) in (2, 3) for a, b in p.groups)
    again = [sample_plan(6, torch.Generator().manual_seed(0)) for _ in range(1)]
    assert again[0].groups == plans[0].groups  # same generator state -> same plan
    assert deepest_plan(6, (2, 3)).groups == ((1, 2), (3, 5))
    assert deepest_plan(6, (2,)).groups == ((2, 3), (4, 5))
    assert deepest_plan(6, (2, 3)).depth == min(p.depth for p in plans)
