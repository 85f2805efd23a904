"""The one-stage (SAT-HMR) estimator: network parts, matching and losses, weights files, the
pipeline stage and its place in the config, the bench's token columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.pipeline.errors import CheckpointError
from hmrflow.pipeline.types import FrameBatch
from hmrflow.stages.mesh.accel.flops import block_flops, onestage_flops
from hmrflow.stages.mesh.backbone import ViTConfig
from hmrflow.stages.onestage.losses import (
    PeopleTargets,
    generalized_iou,
    hungarian_match,
    onestage_losses,
    pelvis_camera,
    project,
)
from hmrflow.stages.onestage.model import OneStageEstimator, OneStageOutput, OneStageSpec
from hmrflow.stages.onestage.tokens import HIGH_RES

#: A small spec for fast tests: 8x8 low grid (128x128 low, 256x256 high input).
SMALL = OneStageSpec(
    name="test",
    embed_dim=32,
    num_heads=2,
    shallow_depth=1,
    main_depth=1,
    low_size=(128, 128),
    queries=6,
    decoder_dim=32,
    decoder_depth=1,
    decoder_heads=2,
)


def _model(seed: int = 0) -> OneStageEstimator:
    torch.manual_seed(seed)
    return OneStageEstimator(SMALL).eval()


def test_spec_rejects_odd_grids() -> None:
    with pytest.raises(ValueError, match="even token grid"):
        OneStageSpec(low_size=(144, 128))  # 9 rows of tokens: 2x2 pooling impossible


def test_token_counts_follow_the_mode() -> None:
    m = _model()
    x = torch.randn(1, 3, 256, 256)
    conf = torch.zeros(1, 8, 8)
    conf[0, 2:4, 2:4] = 1.0  # a 2x2 person block
    scale = torch.full((1, 8, 8), 0.1)  # small: high resolution
    with torch.no_grad():
        counts = {
            mode: m(x, mode=mode, scale_targets=(conf, scale)).tokens
            for mode in ("adaptive", "all_low", "all_high", "discard_background")
        }
    # 60 background cells: 15 pooled blocks of 4; the 4 person cells become 16 high-res tokens
    assert int(counts["adaptive"].counts) == 15 + 16
    assert int(((counts["adaptive"].kind == HIGH_RES) & counts["adaptive"].valid).sum()) == 16
    assert int(counts["all_low"].counts) == 64
    assert int(counts["all_high"].counts) == 256
    assert int(counts["discard_background"].counts) == 16


def test_high_resolution_tokens_are_the_shallow_encoding_of_those_patches() -> None:
    """encode_high embeds only the selected patches (unfold + the conv's weights) and runs the shallow
    encoder on them alone: the same numbers as a convolution over the whole image, gathered, then
    the shallow blocks on that set."""
    m = _model(1)
    x = torch.randn(1, 3, 256, 256)
    small = torch.zeros(1, 8, 8, dtype=torch.bool)
    small[0, 1, 5] = True
    small[0, 6, 2] = True
    with torch.no_grad():
        got = m.encode_high(x, small)[0]  # (16, 16, C)
        full = m.patch_embed(x)[0] + m.pos_high[0]  # (256, C), conv over the whole image
        cells = [(2 * r + dr, 2 * c + dc) for r, c in ((1, 5), (6, 2)) for dr in (0, 1) for dc in (0, 1)]
        ref = full[[16 * r + c for r, c in cells]][None]
        for blk in m.shallow:
            ref = blk(ref)
    np.testing.assert_allclose(torch.stack([got[r, c] for r, c in cells]).numpy(), ref[0].numpy(), atol=1e-5)
    assert float(got[0, 0].abs().sum()) == 0.0  # not selected: nothing computed


def test_init_from_estimator_copies_blocks_and_resizes_positions() -> None:
    from hmrflow.stages.mesh.backbone import ViTBackbone

    vit = ViTBackbone(ViTConfig(embed_dim=32, depth=3, num_heads=2, image_size=(64, 48), mlp_ratio=2.0))
    m = _model()
    assert m.init_from_estimator(vit) == 2  # 1 shallow + 1 main block
    torch.testing.assert_close(m.shallow[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(m.blocks[0].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert m.pos_low.shape == (1, 64, 32) and m.pos_high.shape == (1, 256, 32)
    wide = ViTBackbone(ViTConfig(embed_dim=32, depth=2, num_heads=2, image_size=(64, 48), mlp_ratio=4.0))
    with pytest.raises(ValueError, match="block shapes differ"):
        m.init_from_estimator(wide)


def test_pelvis_back_projection_round_trip() -> None:
    K = torch.tensor([[[300.0, 0, 128], [0, 300.0, 96], [0, 0, 1]]])
    p = torch.tensor([[0.4, -0.3, 5.0]])
    uv = project(p[:, None], K, (256, 192))[:, 0]
    log_depth = torch.log(p[:, 2] / (300.0 / 256))
    torch.testing.assert_close(pelvis_camera(uv, log_depth, K, (256, 192)), p)


def test_giou_known_values() -> None:
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [4.0, 0, 6, 2], [0.0, 0, 2, 2]])
    g = generalized_iou(a, b)[0]
    # overlap 1 of union 7, hull 9; disjoint: iou 0, hull 12 of union 8; identical: 1
    torch.testing.assert_close(g, torch.tensor([1 / 7 - 2 / 9, -4 / 12, 1.0]))


def _perfect_output(targets: PeopleTargets, order: list[int], q: int) -> OneStageOutput:
    """An output whose queries ``order[i]`` hold person i exactly (others far off, unsure)."""
    from hmrflow.priors.rotations import matrix_to_rot6d

    n = len(targets)
    logits = torch.full((1, q), -6.0)
    boxes = torch.full((1, q, 4), 0.05)
    rot = torch.eye(3).repeat(1, q, 24, 1, 1)
    betas = torch.zeros(1, q, 10)
    root = torch.full((1, q, 2), 0.02)
    depth = torch.zeros(1, q)
    for i in range(n):
        k = order[i]
        logits[0, k] = 6.0
        boxes[0, k] = targets.boxes[i]
        rot[0, k] = targets.rotmats[i]
        betas[0, k] = targets.betas[i]
        root[0, k] = targets.root_uv[i]
        depth[0, k] = targets.log_depth[i]
    toks_valid = torch.ones(1, 4, dtype=torch.bool)
    from hmrflow.stages.onestage.tokens import ScaleAdaptiveTokens

    toks = ScaleAdaptiveTokens(
        torch.zeros(1, 4, 2), toks_valid, torch.ones(1, 4), torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.long)
    )
    return OneStageOutput(
        logits=logits,
        boxes=boxes,
        rotmats=rot,
        pose6d=matrix_to_rot6d(rot),
        betas=betas,
        root_uv=root,
        log_depth=depth,
        scale_conf=torch.full((1, 2, 2), -6.0),
        scale=torch.zeros(1, 2, 2),
        tokens=toks,
        token_obj=torch.full((1, 4), -6.0),
        ref=torch.full((1, q, 2), 0.02),  # every token outside the people: one-to-one only
    )


def test_matching_finds_the_people_and_perfect_predictions_cost_nothing() -> None:
    from hmrflow.priors.body_model import load_body_model
    from hmrflow.priors.rotations import axis_angle_to_matrix

    body = load_body_model("synthetic", device="cpu")
    g = torch.Generator().manual_seed(3)
    rot = axis_angle_to_matrix(0.3 * torch.randn(2, 24, 3, generator=g))
    betas = torch.randn(2, 10, generator=g)
    K = torch.tensor([[[400.0, 0, 256], [0, 400.0, 192], [0, 0, 1]]])
    transl = torch.tensor([[-0.8, 0.1, 6.0], [0.9, 0.0, 8.0]])
    joints = body(rot, betas, transl).joints
    j2d = project(joints, K.expand(2, 3, 3), (512, 384))
    t = PeopleTargets(
        boxes=torch.tensor([[0.3, 0.5, 0.1, 0.4], [0.7, 0.5, 0.08, 0.3]]),
        root_uv=j2d[:, 0],
        log_depth=torch.log(joints[:, 0, 2] / (400.0 / 512)),
        rotmats=rot,
        betas=betas,
        joints=joints,
        joints2d=j2d,
    )
    out = _perfect_output(t, [4, 1], 6)
    q, k = hungarian_match(out, [t])[0]
    assert dict(zip(k.tolist(), q.tolist())) == {0: 4, 1: 1}
    maps = (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    _, parts = onestage_losses(out, [t], K, maps, torch.zeros(1, 4), body, (512, 384))
    for name in ("box", "giou", "root", "depth", "pose", "betas", "j3d", "j2d"):
        assert parts[name] < 1e-4, (name, parts[name])
    # a wrong body pose shows in the pose and 3D-joint losses
    out.rotmats[0, 4, 1:] = torch.eye(3)
    _, bad = onestage_losses(out, [t], K, maps, torch.zeros(1, 4), body, (512, 384))
    assert bad["pose"] > 0.01 and bad["j3d"] > 0.005


def test_flops_count_the_parts() -> None:
    vit = ViTConfig(embed_dim=SMALL.embed_dim, depth=1, num_heads=SMALL.num_heads, mlp_ratio=SMALL.mlp_ratio)
    base = onestage_flops(SMALL, 0, 20)
    more_main = onestage_flops(SMALL, 0, 40)
    high = onestage_flops(SMALL, 16, 20)
    assert high - base == 2 * 16 * 3 * 16**2 * 32 + block_flops(vit, 16)  # embed + 1 shallow block
    assert more_main > base and onestage_flops(SMALL, 256, 256) > high


# ------------------------------------------------------------------ weights and stage
def test_weights_round_trip_and_errors(tmp_path) -> None:
    from hmrflow.stages.onestage.weights import load_onestage, save_onestage

    m = _model(2)
    p = save_onestage(m, tmp_path / "os.safetensors")
    back = load_onestage(p)
    assert back.spec == SMALL
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a, b = m(x), back(x)
    # float16 storage: close, not equal
    torch.testing.assert_close(a.boxes, b.boxes, atol=2e-3, rtol=0)
    with pytest.raises(CheckpointError, match="missing.safetensors.*not found"):
        load_onestage(tmp_path / "missing.safetensors")
    from hmrflow.pipeline.checkpoints import save_state_dict

    other = save_state_dict({"w": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"format": "x"})
    with pytest.raises(CheckpointError, match="other.safetensors: not an hmrflow one-stage"):
        load_onestage(other)


def test_letterbox_keeps_the_frame_top_left() -> None:
    from hmrflow.stages.onestage.weights import letterbox_frames

    img = np.full((1, 100, 400, 3), 200, np.uint8)
    x, s = letterbox_frames(img, SMALL)  # 256x256 input: scale 0.64, 64 rows of picture
    assert s == pytest.approx(0.64) and x.shape == (1, 3, 256, 256)
    assert float(x[0, :, 70:].abs().max()) == 0.0 and float(x[0, :, :60].abs().min()) > 0.5


def test_stage_emits_matching_tables(tmp_path) -> None:
    from hmrflow.pipeline.config import DetectConfig, EstimateConfig
    from hmrflow.stages.onestage.stage import OneStageEstimates, OneStageStage
    from hmrflow.stages.onestage.weights import save_onestage

    m = _model(4)
    with torch.no_grad():
        m.cls_out.bias.fill_(4.0)  # every query a detection: rows to check
    path = save_onestage(m, tmp_path / "os.safetensors")
    cfg = DetectConfig(kind="onestage", onestage_weights=str(path), score_threshold=0.5, nms_iou=1.0)
    stage = OneStageStage(cfg, EstimateConfig(focal_px=500.0))
    rng = np.random.default_rng(0)
    frames = FrameBatch("v", np.arange(3), np.arange(3) / 30.0, rng.integers(0, 255, (3, 120, 160, 3), dtype=np.uint8))
    out = stage(frames)
    det, est = out.detections, OneStageEstimates()(out)
    assert len(det) == len(est) == 3 * SMALL.queries
    np.testing.assert_array_equal(det.frame_idx, est.frame_idx)
    np.testing.assert_array_equal(det.boxes_xyxy, est.boxes_xyxy)
    assert (det.boxes_xyxy[:, [0, 1]] >= -0.5).all() and (det.boxes_xyxy[:, 2] <= 159.5).all()
    assert np.allclose(np.linalg.det(est.rotmats), 1.0, atol=1e-4)
    assert (est.focal == 500.0).all() and np.isfinite(est.cam_t).all()
    assert stage.stats["frames"] == 3 and stage.stats["tokens"] > 0 and stage.stats["flops"] > 0
    # the translation puts the pelvis where the model said: re-derive it for one row
    from hmrflow.priors.body_model import load_body_model

    body = load_body_model("synthetic", device="cpu")
    pelvis = est.cam_t[0] + body.rest_joints(torch.from_numpy(est.betas[:1]))[0, 0].numpy()
    assert pelvis[2] > 0
    empty = stage(FrameBatch("v", np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 120, 160, 3), np.uint8)))
    assert len(empty.detections) == 0 and len(empty.estimates) == 0


def test_stage_missing_weights_is_a_clear_error(tmp_path) -> None:
    from hmrflow.pipeline.config import DetectConfig, EstimateConfig
    from hmrflow.stages.onestage.stage import OneStageStage

    stage = OneStageStage(
        DetectConfig(kind="onestage", onestage_weights=str(tmp_path / "nope.safetensors")), EstimateConfig()
    )
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        stage.setup()


def test_preset_builds_the_one_stage_frame_stages(tmp_path) -> None:
    from hmrflow.jobs.pipelines import build_spec, model_files
    from hmrflow.pipeline.config import load_config
    from hmrflow.stages.camera.observe import CameraObserver
    from hmrflow.stages.detect.stage import SYNTHETIC_ONESTAGE_NOTE, detector_notes
    from hmrflow.stages.onestage.stage import OneStageEstimates, OneStageStage

    cfg = load_config("onestage")
    assert cfg.detect.kind == "onestage"
    built = build_spec(cfg, tmp_path).build()
    assert [type(s) for s in built.frame_stages] == [OneStageStage, CameraObserver, OneStageEstimates]
    models = model_files(cfg)
    assert models["onestage"].endswith("onestage_tiny.safetensors") and "estimator" not in models
    assert detector_notes(cfg.detect) == [SYNTHETIC_ONESTAGE_NOTE]
    assert detector_notes(load_config("onestage", ["detect.onestage_weights=mine.safetensors"]).detect) == []
    assert load_config("clip", ["detect.kind=onestage"]).detect.kind == "onestage"


def test_bench_token_columns_and_all_high_ratios() -> None:
    from hmrflow.jobs.bench.pipeline import VARIANTS, add_all_high_ratios, token_columns

    assert {"onestage", "onestage-all-low", "onestage-all-high", "onestage-no-background"} <= set(VARIANTS)
    assert token_columns({}) == {}
    a = {
        "set": "far",
        "seed": 1,
        "variant": "onestage",
        **token_columns({"frames": 2, "tokens": 100, "high_tokens": 20, "flops": 4e9}),
    }
    h = {
        "set": "far",
        "seed": 1,
        "variant": "onestage-all-high",
        **token_columns({"frames": 2, "tokens": 400, "high_tokens": 400, "flops": 16e9}),
    }
    two = {"set": "far", "seed": 1, "variant": "per-frame"}
    add_all_high_ratios([a, h, two])
    assert a["tokens"] == 50 and a["gflops"] == 2.0
    assert a["tokens_vs_all_high"] == 0.25 and a["flops_vs_all_high"] == 0.25 and h["flops_vs_all_high"] == 1.0
    assert "flops_vs_all_high" not in two


def test_eclm_merges_the_encoder_blocks() -> None:
    """The encoders are the project's ViT blocks: ECLM's merge turns two main blocks into one
    (task arithmetic on their weights) and the model runs with the shallower encoder."""
    from dataclasses import replace

    from hmrflow.stages.mesh.accel.eclm import merge_blocks

    torch.manual_seed(5)
    m = OneStageEstimator(replace(SMALL, main_depth=3)).eval()
    b0, b1, b2 = m.blocks
    merged = merge_blocks([b0, b1, b2])
    expect = b0.mlp.fc1.weight + (b1.mlp.fc1.weight - b0.mlp.fc1.weight) + (b2.mlp.fc1.weight - b0.mlp.fc1.weight)
    torch.testing.assert_close(merged.mlp.fc1.weight, expect)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        deep = m(x)
        m.blocks = torch.nn.ModuleList([merged])
        shallow = m(x)
    assert shallow.boxes.shape == deep.boxes.shape and torch.isfinite(shallow.boxes).all()
    assert not torch.allclose(shallow.boxes, deep.boxes)


def test_bench_runs_the_one_stage_variant_through_the_pipeline(tmp_path) -> None:
    """The bench's onestage variants run the real pipeline (decode -> one-stage -> track -> write)
    and gather the stage's token and FLOP totals; all-high costs more than adaptive."""
    from hmrflow.jobs.bench.pipeline import VARIANTS, run_variant, token_columns
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec
    from hmrflow.stages.onestage.weights import save_onestage

    weights = save_onestage(_model(6), tmp_path / "os.safetensors")
    sets = tmp_path / "set"
    render_clip(
        SceneSpec(name="os1", seed=8, people=2, seconds=0.5, fps=10.0, width=320, height=240), sets, progress=False
    )
    cols = {}
    for variant in ("onestage", "onestage-all-high"):
        stats: dict[str, float] = {}
        overrides = [*VARIANTS[variant], f"detect.onestage_weights={weights}", "detect.score_threshold=0.9"]
        _, frames = run_variant(sets, tmp_path / "out" / variant, "clip", overrides, {}, stats)
        assert stats["frames"] == frames == 5
        cols[variant] = token_columns(stats)
        assert (tmp_path / "out" / variant / "os1" / "manifest.json").is_file()
    assert cols["onestage-all-high"]["tokens"] == 256 and cols["onestage-all-high"]["high_tokens"] == 256
    assert cols["onestage"]["gflops"] < cols["onestage-all-high"]["gflops"]


def test_sizes_tiny_trains_here_and_paper_has_sat_hmr_depth() -> None:
    from hmrflow.stages.mesh.model import SIZES as CROP_SIZES
    from hmrflow.stages.onestage.model import SIZES

    tiny, paper = SIZES["tiny"], SIZES["paper"]
    # tiny's blocks have the tiny crop estimator's shape (so they start from its weights)
    crop = CROP_SIZES["tiny"].backbone
    assert (tiny.embed_dim, tiny.num_heads, tiny.mlp_ratio) == (crop.embed_dim, crop.num_heads, crop.mlp_ratio)
    assert tiny.shallow_depth + tiny.main_depth == crop.depth
    assert (paper.shallow_depth, paper.main_depth, paper.embed_dim) == (3, 9, 768)
    assert paper.grid == (28, 40) and paper.high_size == (896, 1280)


def test_focal_rule_is_the_crop_estimators() -> None:
    from hmrflow.pipeline.config import EstimateConfig
    from hmrflow.stages.onestage.stage import frame_focal

    assert frame_focal(EstimateConfig(), 640, 480) == pytest.approx(800.0)  # the diagonal
    assert frame_focal(EstimateConfig(focal_default="hmr2"), 640, 480) == pytest.approx(5000 / 256 * 640)
    assert frame_focal(EstimateConfig(focal_px=321.0), 640, 480) == 321.0
