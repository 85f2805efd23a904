"""Import of the published HMR2.0 checkpoint layout: strict key accounting, shape errors,
and outputs equal to an independent re-computation of HMR2.0's forward from the raw keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hmrflow.pipeline.errors import CheckpointError
from hmrflow.stages.mesh.backbone import ViTConfig
from hmrflow.stages.mesh.head import HeadConfig
from hmrflow.stages.mesh.hmr2_import import hmr2_key_layout, import_hmr2_state_dict
from hmrflow.stages.mesh.model import EstimatorSpec, MeshEstimator, build_estimator

# same structure as ViT-H + HMR2 head, small enough for a fast test
SMALL = EstimatorSpec(
    name="test",
    backbone=ViTConfig(embed_dim=64, depth=2, num_heads=4),
    head=HeadConfig(context_dim=64, dim=48, depth=2, heads=2, dim_head=16, mlp_dim=40),
)


def _random_checkpoint(spec: EstimatorSpec | str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in hmr2_key_layout(spec).items():
        if key.startswith("smpl.") or key == "initialized":
            sd[key] = torch.zeros(shape)  # body-model buffers: content irrelevant here
        elif "norm" in key and key.endswith("weight"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
    return sd


def _ln(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps)


def _mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention written out as HMR2 does (q * scale @ k^T), inputs (B, N, heads*d)."""
    b, nq, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    attn = ((q * d**-0.5) @ k.transpose(-1, -2)).softmax(-1)
    return (attn @ v).transpose(1, 2).reshape(b, nq, c)


def _reference_hmr2(sd: dict[str, torch.Tensor], x: torch.Tensor, spec: EstimatorSpec) -> dict[str, torch.Tensor]:
    """HMR2.0's forward computed directly from the checkpoint tensors (no hmrflow modules)."""
    heads, depth = spec.backbone.num_heads, spec.backbone.depth
    t = F.conv2d(x, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"], stride=16, padding=2)
    b = t.shape[0]
    t = t.flatten(2).transpose(1, 2)
    pe = sd["backbone.pos_embed"]
    t = t + pe[:, 1:] + pe[:, :1]
    for i in range(depth):
        k = f"backbone.blocks.{i}."
        h = _ln(t, sd, k + "norm1", 1e-6)
        q, kk, v = F.linear(h, sd[k + "attn.qkv.weight"], sd[k + "attn.qkv.bias"]).chunk(3, -1)
        t = t + F.linear(_mha(q, kk, v, heads), sd[k + "attn.proj.weight"], sd[k + "attn.proj.bias"])
        h = _ln(t, sd, k + "norm2", 1e-6)
        h = F.gelu(F.linear(h, sd[k + "mlp.fc1.weight"], sd[k + "mlp.fc1.bias"]))
        t = t + F.linear(h, sd[k + "mlp.fc2.weight"], sd[k + "mlp.fc2.bias"])
    ctx = _ln(t, sd, "backbone.last_norm", 1e-6)

    p = "smpl_head.transformer."
    tok = F.linear(torch.zeros(b, 1, 1), sd[p + "to_token_embedding.weight"], sd[p + "to_token_embedding.bias"])
    tok = tok + sd[p + "pos_embedding"]
    for i in range(spec.head.depth):
        k = f"{p}transformer.layers.{i}."
        h = _ln(tok, sd, k + "0.norm", 1e-5)
        q, kk, v = F.linear(h, sd[k + "0.fn.to_qkv.weight"]).chunk(3, -1)
        tok = tok + F.linear(
            _mha(q, kk, v, spec.head.heads), sd[k + "0.fn.to_out.0.weight"], sd[k + "0.fn.to_out.0.bias"]
        )
        h = _ln(tok, sd, k + "1.norm", 1e-5)
        q = F.linear(h, sd[k + "1.fn.to_q.weight"])
        kk, v = F.linear(ctx, sd[k + "1.fn.to_kv.weight"]).chunk(2, -1)
        tok = tok + F.linear(
            _mha(q, kk, v, spec.head.heads), sd[k + "1.fn.to_out.0.weight"], sd[k + "1.fn.to_out.0.bias"]
        )
        h = _ln(tok, sd, k + "2.norm", 1e-5)
        h = F.gelu(F.linear(h, sd[k + "2.fn.net.0.weight"], sd[k + "2.fn.net.0.bias"]))
        tok = tok + F.linear(h, sd[k + "2.fn.net.3.weight"], sd[k + "2.fn.net.3.bias"])
    tok = tok[:, 0]
    return {
        "pose6d": F.linear(tok, sd["smpl_head.decpose.weight"], sd["smpl_head.decpose.bias"])
        + sd["smpl_head.init_body_pose"],
        "betas": F.linear(tok, sd["smpl_head.decshape.weight"], sd["smpl_head.decshape.bias"])
        + sd["smpl_head.init_betas"],
        "cam": F.linear(tok, sd["smpl_head.deccam.weight"], sd["smpl_head.deccam.bias"]) + sd["smpl_head.init_cam"],
    }


def test_imported_model_reproduces_hmr2_forward() -> None:
    sd = _random_checkpoint(SMALL)
    model = MeshEstimator(SMALL).eval()
    report = import_hmr2_state_dict(sd, model)
    x = torch.randn(3, 3, 256, 192, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)
    ref = _reference_hmr2(sd, x, SMALL)
    assert torch.allclose(out.pose6d.reshape(3, 144), ref["pose6d"], atol=1e-5)
    assert torch.allclose(out.betas, ref["betas"], atol=1e-5)
    assert torch.allclose(out.pred_cam, ref["cam"], atol=1e-5)
    assert torch.allclose(out.confidence, torch.full((3,), 0.5))  # hmrflow-only readout zeroed
    assert report.missing == []
    assert set(report.hmrflow_only) == {"head.confidence.weight", "head.confidence.bias"}


def test_weights_land_in_the_right_places() -> None:
    sd = _random_checkpoint(SMALL, seed=1)
    model = MeshEstimator(SMALL)
    report = import_hmr2_state_dict(sd, model)
    bb, head = model.backbone, model.head
    assert torch.equal(bb.patch_embed.proj.weight, sd["backbone.patch_embed.proj.weight"])
    assert torch.equal(bb.blocks[1].attn.qkv.weight, sd["backbone.blocks.1.attn.qkv.weight"])
    assert torch.equal(bb.blocks[1].mlp.fc2.bias, sd["backbone.blocks.1.mlp.fc2.bias"])
    pe = sd["backbone.pos_embed"]
    assert torch.allclose(bb.pos_embed, pe[:, 1:] + pe[:, :1])
    assert torch.equal(
        head.layers[1].cross_attn.to_kv.weight, sd["smpl_head.transformer.transformer.layers.1.1.fn.to_kv.weight"]
    )
    assert torch.equal(head.layers[0].ff.fc2.weight, sd["smpl_head.transformer.transformer.layers.0.2.fn.net.3.weight"])
    assert torch.equal(head.init_pose, sd["smpl_head.init_body_pose"][0])
    assert torch.equal(head.query_pos, sd["smpl_head.transformer.pos_embedding"])
    # our attention really uses the imported qkv: changing the checkpoint's value changes the output
    assert report.used["backbone.blocks.0.attn.qkv.weight"] == "backbone.blocks.0.attn.qkv.weight"
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        before = model.forward_features(x)
        sd2 = dict(sd)
        sd2["backbone.blocks.0.attn.qkv.weight"] = sd["backbone.blocks.0.attn.qkv.weight"] * 2
        import_hmr2_state_dict(sd2, model)
        assert not torch.allclose(model.forward_features(x), before, atol=1e-4)


def test_ignored_keys_are_listed_with_reasons() -> None:
    sd = _random_checkpoint(SMALL)
    report = import_hmr2_state_dict({"state_dict": sd}, MeshEstimator(SMALL))  # Lightning wrapper
    assert len(report.used) + len(report.ignored) == len(sd)
    assert "discriminator.D_alljoints_fc1.weight" in report.ignored
    assert "training-only" in report.ignored["discriminator.pose_out.3.bias"]
    assert "body-model" in report.ignored["smpl.posedirs"]
    assert "initialized" in report.ignored
    assert not any(k.startswith(("backbone.", "smpl_head.")) for k in report.ignored)
    assert "ignored" in report.summary()


def test_shape_mismatch_names_key_and_shapes() -> None:
    sd = _random_checkpoint(SMALL)
    sd["backbone.blocks.1.mlp.fc1.weight"] = torch.zeros(10, 64)
    model = MeshEstimator(SMALL)
    before = model.backbone.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(CheckpointError, match=r"backbone\.blocks\.1\.mlp\.fc1\.weight.*\(10, 64\).*\(256, 64\)"):
        import_hmr2_state_dict(sd, model)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, before)  # nothing half-imported


def test_missing_and_unknown_keys() -> None:
    sd = _random_checkpoint(SMALL)
    del sd["smpl_head.deccam.bias"]
    with pytest.raises(CheckpointError, match=r"lacks 1 key.*smpl_head\.deccam\.bias"):
        import_hmr2_state_dict(sd, MeshEstimator(SMALL))
    sd = _random_checkpoint(SMALL)
    sd["backbone.blocks.2.norm1.weight"] = torch.ones(64)  # a deeper checkpoint
    with pytest.raises(CheckpointError, match=r"unknown.*backbone\.blocks\.2\.norm1\.weight"):
        import_hmr2_state_dict(sd, MeshEstimator(SMALL))
    report = import_hmr2_state_dict(sd, MeshEstimator(SMALL), strict=False)
    assert "strict=False" in report.ignored["backbone.blocks.2.norm1.weight"]


def test_published_vit_h_layout() -> None:
    layout = hmr2_key_layout("huge")
    assert layout["backbone.patch_embed.proj.weight"] == (1280, 3, 16, 16)
    assert layout["backbone.pos_embed"] == (1, 193, 1280)
    assert layout["backbone.blocks.31.attn.qkv.weight"] == (3840, 1280)
    assert layout["backbone.blocks.31.mlp.fc1.weight"] == (5120, 1280)
    assert "backbone.blocks.32.norm1.weight" not in layout
    assert layout["smpl_head.transformer.to_token_embedding.weight"] == (1024, 1)
    assert layout["smpl_head.transformer.transformer.layers.5.0.fn.to_qkv.weight"] == (1536, 1024)
    assert layout["smpl_head.transformer.transformer.layers.5.1.fn.to_kv.weight"] == (1024, 1280)
    assert layout["smpl_head.transformer.transformer.layers.5.1.fn.to_q.weight"] == (512, 1024)
    assert layout["smpl_head.transformer.transformer.layers.5.2.fn.net.0.weight"] == (1024, 1024)
    assert layout["smpl_head.decpose.weight"] == (144, 1024)
    assert layout["smpl_head.init_body_pose"] == (1, 144)
    model_keys = hmr2_key_layout("huge", include_training_keys=False)
    # patch 2 + pos 1, 12 per block, last_norm 2, init 3, token embed 2 + pos 1, 17 per decoder layer, readouts 6
    assert len(model_keys) == 3 + 32 * 12 + 2 + 3 + 3 + 6 * 17 + 6
    n_backbone = sum(torch.Size(s).numel() for k, s in model_keys.items() if k.startswith("backbone."))
    assert n_backbone == 630_912_000


def test_vit_h_layout_accounts_for_every_parameter_on_meta() -> None:
    """Strict accounting for the real ViT-H size without allocating 2.7 GB (meta tensors)."""
    with torch.device("meta"):
        model = build_estimator("huge")
        sd = {k: torch.empty(s) for k, s in hmr2_key_layout("huge").items()}
    report = import_hmr2_state_dict(sd, model)
    assert report.missing == []
    assert len(report.used) == len(hmr2_key_layout("huge", include_training_keys=False))


@pytest.mark.slow
def test_vit_h_import_with_real_tensors() -> None:
    """Full-size ViT-H: allocate, import a random published-layout checkpoint, run one crop."""
    model = build_estimator("huge").eval()
    g = torch.Generator().manual_seed(0)
    sd = {
        k: torch.randn(s, generator=g) * 0.02 for k, s in hmr2_key_layout("huge", include_training_keys=False).items()
    }
    report = import_hmr2_state_dict(sd, model)
    assert report.missing == [] and report.ignored == {}
    assert torch.equal(model.backbone.blocks[31].attn.qkv.weight, sd["backbone.blocks.31.attn.qkv.weight"])
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 192))
    assert out.rotmats.shape == (1, 24, 3, 3) and torch.isfinite(out.rotmats).all()


def test_load_from_safetensors_file(tmp_path) -> None:
    pytest.importorskip("hmrflow.pipeline.checkpoints")
    from safetensors.torch import save_file

    from hmrflow.stages.mesh.hmr2_import import load_hmr2_checkpoint

    sd = {k: v.contiguous() for k, v in _random_checkpoint(SMALL).items() if not k.startswith("smpl.")}
    path = tmp_path / "hmr2.safetensors"
    save_file(sd, str(path))
    model = MeshEstimator(SMALL)
    report = load_hmr2_checkpoint(path, model)
    assert report.missing == []
    assert torch.equal(model.head.decpose.weight, sd["smpl_head.decpose.weight"])
    sd.pop("backbone.last_norm.bias")
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"hmr2\.safetensors.*last_norm\.bias"):
        load_hmr2_checkpoint(path, MeshEstimator(SMALL))
