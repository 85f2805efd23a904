"""ViT mesh estimator: sizes, output shapes and validity, mean-parameter init, batch
independence, bf16 autocast, and the hooks left for token merging."""

from __future__ import annotations

import math

import pytest
import torch

from hmrflow.stages.mesh.backbone import Attention, ViTConfig
from hmrflow.stages.mesh.head import standing_mean_params
from hmrflow.stages.mesh.model import SIZES, MeshEstimator, build_estimator, count_parameters, estimator_spec


@pytest.fixture(scope="module")
def tiny() -> MeshEstimator:
    torch.manual_seed(0)
    return build_estimator("tiny").eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 256, 192, generator=g)


def test_output_shapes_and_types(tiny: MeshEstimator, crops: torch.Tensor) -> None:
    with torch.no_grad():
        out = tiny(crops)
    assert out.rotmats.shape == (3, 24, 3, 3)
    assert out.betas.shape == (3, 10)
    assert out.pred_cam.shape == (3, 3)
    assert out.confidence.shape == (3,)
    assert out.pose6d.shape == (3, 24, 6)
    for t in (out.rotmats, out.betas, out.pred_cam, out.confidence):
        assert t.dtype == torch.float32
        assert torch.isfinite(t).all()
    assert ((out.confidence > 0) & (out.confidence < 1)).all()
    assert tiny.token_grid == (16, 12)
    assert tiny.backbone.forward_features(crops).shape == (3, 16 * 12, 192)


def test_rotmats_are_rotations(crops: torch.Tensor) -> None:
    torch.manual_seed(3)
    model = build_estimator("tiny").eval()
    with torch.no_grad():  # make the readout large so the rotations are far from the mean
        model.head.decpose.weight.normal_(0, 0.5)
        rot = model(crops).rotmats
    eye = torch.eye(3).expand_as(rot)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3, 24), atol=1e-5)
    assert (rot - eye).abs().amax() > 0.5  # really not the identity


def test_mean_params_give_upright_standing_body(crops: torch.Tensor) -> None:
    model = build_estimator("tiny").eval()
    model.head.zero_readout_()
    with torch.no_grad():
        out = model(crops)
    flip_x = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose(out.rotmats[:, 0], flip_x.expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(out.rotmats[:, 1:], torch.eye(3).expand(3, 23, 3, 3), atol=1e-6)
    # SMPL's up axis (+y) points up in the image, i.e. to camera -y (OpenCV: y down)
    up_cam = out.rotmats[:, 0] @ torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(up_cam, torch.tensor([0.0, -1.0, 0.0]).expand(3, 3))
    assert torch.equal(out.betas, torch.zeros(3, 10))
    assert torch.allclose(out.pred_cam, torch.tensor([0.9, 0.0, 0.0]).expand(3, 3))
    pose6d, _, _ = standing_mean_params()
    assert pose6d.shape == (144,)
    assert pose6d[:6].tolist() == [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]


def test_batch_independence(tiny: MeshEstimator, crops: torch.Tensor) -> None:
    with torch.no_grad():
        full = tiny(crops)
        for i in range(crops.shape[0]):
            one = tiny(crops[i : i + 1])
            assert torch.allclose(one.rotmats[0], full.rotmats[i], atol=1e-5)
            assert torch.allclose(one.betas[0], full.betas[i], atol=1e-5)
            assert torch.allclose(one.pred_cam[0], full.pred_cam[i], atol=1e-5)
            assert torch.allclose(one.confidence[0], full.confidence[i], atol=1e-5)
    # and changing another sample does not change sample 0
    other = crops.clone()
    other[1:] = torch.randn_like(other[1:]) * 3
    with torch.no_grad():
        assert torch.allclose(tiny(other).pose6d[0], full.pose6d[0], atol=1e-5)


def test_bf16_autocast_on_cpu(tiny: MeshEstimator, crops: torch.Tensor) -> None:
    with torch.no_grad():
        ref = tiny(crops)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = tiny(crops)
    assert out.rotmats.dtype == torch.float32 and out.pred_cam.dtype == torch.float32
    assert torch.isfinite(out.rotmats).all()
    eye = torch.eye(3).expand_as(out.rotmats)
    assert torch.allclose(out.rotmats.transpose(-1, -2) @ out.rotmats, eye, atol=1e-5)
    assert (out.pose6d - ref.pose6d).abs().max() < 0.05  # bf16 is close to fp32


def test_gradients_reach_every_parameter(crops: torch.Tensor) -> None:
    model = build_estimator("tiny").train()
    out = model(crops[:2])
    loss = out.pose6d.square().mean() + out.betas.square().mean() + out.pred_cam.square().mean() + out.confidence.mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_sizes_by_name() -> None:
    huge = estimator_spec("huge")
    assert (huge.backbone.embed_dim, huge.backbone.depth, huge.backbone.num_heads) == (1280, 32, 16)
    assert huge.backbone.mlp_hidden == 5120 and huge.backbone.token_grid == (16, 12)
    assert (huge.head.dim, huge.head.depth, huge.head.heads, huge.head.dim_head, huge.head.mlp_dim) == (
        1024,
        6,
        8,
        64,
        1024,
    )
    assert huge.head.context_dim == 1280
    with torch.device("meta"):  # count without allocating 2.7 GB
        model = MeshEstimator(huge)
    # HMR2.0's ViT-H has 630,912,000 backbone parameters; we fold its class-token position slot
    assert count_parameters(model.backbone) == 630_912_000 - 1280
    tiny = build_estimator("tiny")
    assert count_parameters(tiny) * 4 < 10_000_000  # a bundled fp32 tiny model stays under 10 MB
    assert set(SIZES) == {"tiny", "small", "base", "large", "huge"}
    with pytest.raises(ValueError, match="unknown estimator size"):
        estimator_spec("gigantic")


def test_other_image_size_and_wrong_crops() -> None:
    model = build_estimator("tiny", image_size=(128, 96)).eval()
    assert model.token_grid == (8, 6)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 128, 96)).rotmats.shape == (2, 24, 3, 3)
        with pytest.raises(ValueError, match="tokens"):
            model(torch.zeros(1, 3, 256, 192))


def test_attention_bias_is_proportional_attention() -> None:
    """A token duplicated k times == one token with additive bias log(k) (what ToMe relies on)."""
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 5, 32)
    dup = torch.cat([x, x[:, 4:5], x[:, 4:5]], dim=1)  # token 4 three times
    bias = torch.zeros(2, 1, 1, 5)
    bias[..., 4] = math.log(3.0)
    with torch.no_grad():
        full = attn(dup)[:, :5]
        merged = attn(x, attn_bias=bias)
        plain = attn(x, attn_bias=torch.zeros(2, 1, 1, 5))
        assert torch.allclose(plain, attn(x), atol=1e-6)
        assert torch.allclose(merged, full, atol=1e-5)
        assert not torch.allclose(merged, plain, atol=1e-3)


def test_blocks_can_be_removed_and_head_takes_any_token_count(tiny: MeshEstimator, crops: torch.Tensor) -> None:
    model = build_estimator("tiny").eval()
    del model.backbone.blocks[3]
    with torch.no_grad():
        tokens = model.forward_features(crops)
        assert tokens.shape == (3, 192, 192)
        fewer = model.forward_head(tokens[:, ::2], context_bias=torch.zeros(3, 1, 1, 96))
    assert fewer.rotmats.shape == (3, 24, 3, 3)


def test_vit_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(embed_dim=100, depth=1, num_heads=3)
