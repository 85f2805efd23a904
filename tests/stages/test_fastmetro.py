"""FastMETRO head: coarse mesh and upsampling, the decoder's attention pattern, merged tokens,
the SMPL readout and vertex fit, checkpoints, the stage options and the bundled weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.pipeline.config import EstimateConfig
from hmrflow.pipeline.errors import CheckpointError
from hmrflow.priors.body_model import load_body_model
from hmrflow.priors.metrics import mpjpe, pa_mpjpe, pve
from hmrflow.priors.rotations import rot6d_to_matrix
from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator, save_estimator
from hmrflow.stages.mesh.coarse_mesh import build_coarse_mesh, coarse_mesh_for
from hmrflow.stages.mesh.fastmetro import FastMETROHead, decoder_attention_allowed
from hmrflow.stages.mesh.head import N_JOINTS, SelfAttention
from hmrflow.stages.mesh.model import build_estimator
from hmrflow.stages.mesh.vertex_fit import fit_to_vertices

HW = (128, 96)


@pytest.fixture(scope="module")
def body():
    return load_body_model("synthetic")


@pytest.fixture(scope="module")
def mesh(body):
    return coarse_mesh_for(body)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_estimator("tiny", HW, head="fastmetro").eval()


def _held_out_bodies(body, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` poses from the motion library (random frames) with random shapes: rotmats, betas."""
    from hmrflow.jobs.train.estimator_data import _sample_poses
    from hmrflow.priors.rotations import axis_angle_to_matrix

    rng = np.random.default_rng(seed)
    rot = axis_angle_to_matrix(torch.from_numpy(_sample_poses(rng, n).astype(np.float32)))
    betas = torch.from_numpy(rng.normal(0, 1, (n, 10)).astype(np.float32))
    return rot, betas


# ----------------------------------------------------------------------------- coarse mesh
def test_coarse_mesh_size_topology_and_upsampling(body, mesh) -> None:
    v = body.layer.v_template.double().numpy()
    assert mesh.n_vertices == v.shape[0] and mesh.n_coarse == round(v.shape[0] / 16)
    adj = mesh.adjacency
    assert (adj == adj.T).all() and adj.diagonal().all()
    deg = adj.sum(1) - 1
    assert deg.min() >= 2, "every coarse vertex has neighbours on both sides"
    u = mesh.upsample_matrix()
    np.testing.assert_allclose(np.asarray(u.sum(1)).ravel(), 1.0, atol=1e-6)  # rows of U sum to 1
    assert (u.data >= 0).all() and (u.getnnz(axis=1) <= 3).all()
    # U maps the decimated template back onto the full template: 12 mm mean, 50 mm at worst
    err = np.linalg.norm(u @ v[mesh.index] - v, axis=1) * 1000
    assert err.mean() < 12.0 and err.max() < 50.0, (err.mean(), err.max())
    np.testing.assert_allclose(u @ v[mesh.index], mesh.upsample(torch.from_numpy(v[mesh.index])[None])[0], atol=1e-9)
    # a coarse vertex is its own image
    np.testing.assert_allclose((u @ v[mesh.index])[mesh.index], v[mesh.index], atol=1e-12)


def test_coarse_mesh_of_a_sphere_is_a_sphere() -> None:
    """On a fine unit sphere the decimated mesh's upsampling stays within its chordal error."""
    import scipy.spatial

    rng = np.random.default_rng(0)
    p = rng.normal(size=(2000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    faces = scipy.spatial.ConvexHull(p).simplices
    m = build_coarse_mesh(p, faces, 125)
    rec = m.upsample_matrix() @ p[m.index]
    radial = 1 - np.linalg.norm(rec, axis=1)
    assert radial.max() < 0.06 and radial.min() > -1e-9  # inside the sphere, by at most the sagitta
    assert len(m.faces) == 2 * 125 - 4  # a closed genus-0 triangulation: F = 2V - 4


def test_coarse_mesh_is_cached_by_body_model_hash(body, mesh, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HMRFLOW_CACHE", str(tmp_path))
    first = coarse_mesh_for(body)
    files = list((tmp_path / "coarse_mesh").glob("*.npz"))
    assert len(files) == 1 and body.sha256[:16] in files[0].name
    again = coarse_mesh_for(body)
    np.testing.assert_array_equal(again.up_idx, first.up_idx)
    np.testing.assert_array_equal(first.index, mesh.index)


# ----------------------------------------------------------------------------- attention pattern
def test_mask_is_the_adjacency_with_joints_unmasked(model, mesh) -> None:
    allowed = model.head.allowed
    k = N_JOINTS
    assert allowed[:k].all() and allowed[:, :k].all()
    np.testing.assert_array_equal(allowed[k:, k:].numpy(), mesh.adjacency)
    np.testing.assert_array_equal(allowed.numpy(), decoder_attention_allowed(mesh.adjacency).numpy())


def test_masked_self_attention_ignores_non_neighbours(model, mesh) -> None:
    torch.manual_seed(1)
    att = SelfAttention(32, 2, 16)
    x = torch.randn(1, model.head.cfg.n_tokens, 32)
    i = 5
    far = int(np.flatnonzero(~mesh.adjacency[i])[0])
    near = int(np.flatnonzero(mesh.adjacency[i] & (np.arange(mesh.n_coarse) != i))[0])
    base = att(x, model.head.allowed)[0, N_JOINTS + i]
    for j, changes in ((far, False), (near, True), (-N_JOINTS, True)):  # -K: a joint token
        y = x.clone()
        y[0, N_JOINTS + j] += 5.0
        out = att(y, model.head.allowed)[0, N_JOINTS + i]
        assert (not torch.allclose(out, base, atol=1e-6)) == changes, j


def test_ablation_has_no_mask(body) -> None:
    a = build_estimator("tiny", HW, head="fastmetro", attention_mask=False).eval()
    b = build_estimator("tiny", HW, head="fastmetro").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, *HW)
    with torch.no_grad():
        assert not torch.allclose(a(x).coarse, b(x).coarse, atol=1e-7)


# ----------------------------------------------------------------------------- merged tokens
def test_head_on_merged_tokens_equals_duplicated_tokens(model) -> None:
    """A token merged from two equal ones (log-size bias) is exactly the pair, in the encoder's
    self-attention and the decoder's cross-attention alike."""
    torch.manual_seed(2)
    tok = torch.randn(2, 10, model.head.cfg.context_dim)
    dup = torch.cat([tok, tok[:, 3:4]], dim=1)
    bias = torch.zeros(2, 1, 1, 10)
    bias[..., 3] = np.log(2.0)
    with torch.no_grad():
        a, b = model.forward_head(dup), model.forward_head(tok, bias)
    for f in ("coarse", "joints", "pred_cam", "rotmats", "betas"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), atol=1e-5, rtol=1e-4)


def test_head_runs_under_mask_tome_and_eclm(model) -> None:
    import copy

    from hmrflow.stages.mesh.accel.eclm import ECLMPlan, apply_eclm
    from hmrflow.stages.mesh.accel.tome import MaskToMeConfig, apply_mask_tome

    x = torch.randn(3, 3, *HW)
    protect = torch.zeros(3, 8, 6, dtype=torch.bool)
    protect[:, 2:6, 2:4] = True
    m = copy.deepcopy(model)
    with torch.no_grad():
        full = m(x)
        apply_mask_tome(m, MaskToMeConfig(r=6))
        merged = m(x, protect=protect)
        apply_eclm(m, ECLMPlan(base_depth=6, groups=((1, 2),)))
        both = m(x, protect=protect)
    for out in (merged, both):
        assert out.coarse.shape == full.coarse.shape and torch.isfinite(out.coarse).all()
        assert not torch.allclose(out.coarse, full.coarse)  # the merge did change the input
    # a random head's mesh is near the mean body: merging moves it by far less than its size
    assert (merged.coarse - full.coarse).abs().max() < 0.05


# ----------------------------------------------------------------------------- readout and fit
def test_vertex_fit_reproduces_a_known_body(body) -> None:
    rot, betas = _held_out_bodies(body, 4, seed=123)
    target = body(rot, betas)
    from hmrflow.stages.mesh.head import standing_mean_params

    p0 = standing_mean_params()[0].reshape(1, 24, 6).repeat(4, 1, 1)
    # start near the truth (the readout's job), as the stage does
    p_start = (rot[..., :2].transpose(-1, -2).reshape(4, 24, 6) + 0.15 * torch.randn(4, 24, 6)).float()
    r_fit, b_fit, _ = fit_to_vertices(body, target.vertices, p_start, torch.zeros(4, 10), steps=60, lr=0.02)
    fit = body(r_fit, b_fit)
    before = body(rot6d_to_matrix(p_start), torch.zeros(4, 10))
    err_after = pve(fit.vertices, target.vertices, fit.joints[:, 0], target.joints[:, 0])
    err_before = pve(before.vertices, target.vertices, before.joints[:, 0], target.joints[:, 0])
    assert (err_after < 0.5 * err_before).all() and err_after.max() < 20.0, (err_before, err_after)
    assert p0.shape == p_start.shape


# ----------------------------------------------------------------------------- checkpoints and stage
def test_checkpoint_round_trip_keeps_head_and_topology(model, tmp_path) -> None:
    path = save_estimator(model, tmp_path / "fm.safetensors", dtype=torch.float16)
    loaded, plan = load_estimator(path)
    assert plan is None and loaded.spec.head_kind == "fastmetro" and isinstance(loaded.head, FastMETROHead)
    assert loaded.spec.head == model.spec.head
    np.testing.assert_array_equal(loaded.head.allowed.numpy(), model.head.allowed.numpy())
    np.testing.assert_array_equal(loaded.head.up_idx.numpy(), model.head.up_idx.numpy())
    x = torch.randn(2, 3, *HW)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).vertices, model(x).vertices, atol=2e-3, rtol=0)
    # what `train estimator --init` and the stage pass: the expected size and crop size
    again, _ = load_estimator(path, "tiny", HW)
    assert again.spec.head == model.spec.head
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_estimator(path, "tiny", (256, 192))


def test_stage_head_must_match_the_weights(model, tmp_path) -> None:
    from hmrflow.stages.mesh.stage import EstimateStage

    path = str(save_estimator(model, tmp_path / "fm.safetensors"))
    with pytest.raises(CheckpointError, match="fastmetro head, but estimate.head is smpl"):
        EstimateStage(EstimateConfig(weights=path, device="cpu")).setup()
    with pytest.raises(ValueError, match="need estimate.head: fastmetro"):
        EstimateConfig(vertices=True)


def test_stage_keeps_vertices_and_fits_them(model, tmp_path) -> None:
    from hmrflow.pipeline.results import DetectedFrames
    from hmrflow.pipeline.types import MASK_RES, Detections, FrameBatch
    from hmrflow.stages.mesh.stage import EstimateStage

    path = str(save_estimator(model, tmp_path / "fm.safetensors"))
    rng = np.random.default_rng(0)
    frames = FrameBatch("v", np.array([0]), np.array([0.0]), rng.integers(0, 255, (1, 240, 320, 3), np.uint8))
    det = Detections(
        video_id="v",
        frame_idx=np.array([0, 0]),
        pts=np.zeros(2),
        boxes_xyxy=np.array([[40, 20, 120, 220], [180, 30, 260, 230]], np.float32),
        scores=np.ones(2, np.float32),
        masks=np.ones((2, MASK_RES, MASK_RES), bool),
    )
    x = DetectedFrames(frames, det)
    plain = EstimateStage(EstimateConfig(weights=path, device="cpu", head="fastmetro"))
    kept = EstimateStage(EstimateConfig(weights=path, device="cpu", head="fastmetro", vertices=True))
    fitted = EstimateStage(EstimateConfig(weights=path, device="cpu", head="fastmetro", mesh_fit_steps=5))
    a, b, c = plain(x), kept(x), fitted(x)
    assert a.vertices.shape == (2, 0, 3) and b.vertices.shape == (2, model.head.cfg.n_vertices, 3)
    np.testing.assert_array_equal(a.rotmats, b.rotmats)  # keeping the mesh changes nothing else
    assert not np.allclose(a.rotmats, c.rotmats)  # the fit moved the readout
    # the kept mesh is pelvis-relative: its regressed pelvis is at the origin
    pelvis = np.einsum("v,nvc->nc", model.head.j_regressor[0].numpy(), b.vertices.astype(np.float32))
    assert np.abs(pelvis).max() < 5e-3


# ----------------------------------------------------------------------------- bundled weights
BUNDLED = bundled_weights_path("tiny", head="fastmetro")


@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled FastMETRO weights not built")
def test_bundled_fastmetro_on_held_out_crops(body) -> None:
    """The bundled head on fresh rendered crops: its mesh near its validation figures (an
    untrained head: PVE ~310 mm, PA-MPJPE ~180 mm), and its SMPL readout from the exact mesh of
    known bodies (untrained: PA-MPJPE ~180 mm) within the readout's own error, which a few
    vertex-fit steps then reduce."""
    from hmrflow.jobs.train.estimator_data import render_crops
    from hmrflow.stages.mesh.train import evaluate_crops, make_batch

    model, _ = load_estimator(BUNDLED)
    data = render_crops(np.random.default_rng([424242, 0]), 64, HW)
    res = evaluate_crops(model, data, body, batch_size=32, device="cpu")
    assert res["mesh_pve_mm"] < 125.0 and res["mesh_pa_mpjpe_mm"] < 85.0, res
    assert res["pve_mm"] < 125.0 and res["pa_mpjpe_mm"] < 85.0, res
    # the readout alone, on the exact meshes of known bodies in the crops' frame
    _, t = make_batch(render_crops(np.random.default_rng([424243, 0]), 32, HW), np.arange(32))
    gt = body(t.rotmats, t.betas)
    head = model.head
    xyz = torch.cat([gt.joints, gt.vertices[:, torch.as_tensor(coarse_mesh_for(body).index)]], dim=1)
    with torch.no_grad():
        params = head.regressor((xyz - gt.joints[:, :1]).flatten(1))
    pose6d = (params[:, : 24 * 6] + head.init_pose).reshape(-1, 24, 6)
    betas = params[:, 24 * 6 :] + head.init_betas
    read = body(rot6d_to_matrix(pose6d), betas)
    read_pve = pve(read.vertices, gt.vertices, read.joints[:, 0], gt.joints[:, 0]).mean()
    assert float(pa_mpjpe(read.joints, gt.joints).mean()) < 90.0 and float(read_pve) < 95.0
    r_fit, b_fit, _ = fit_to_vertices(body, gt.vertices, pose6d, betas, steps=30)
    fit = body(r_fit, b_fit)
    fit_pve = pve(fit.vertices, gt.vertices, fit.joints[:, 0], gt.joints[:, 0]).mean()
    assert float(fit_pve) < 0.8 * float(read_pve), (float(fit_pve), float(read_pve))
    assert float(mpjpe(fit.joints, gt.joints).mean()) < float(mpjpe(read.joints, gt.joints).mean())


def test_mesh_fit_refuses_another_body_model(model, tmp_path) -> None:
    import dataclasses

    from hmrflow.pipeline.errors import ConfigError
    from hmrflow.stages.mesh.stage import EstimateStage

    other = build_estimator("tiny", HW, head="fastmetro")
    other.spec = dataclasses.replace(other.spec, head=dataclasses.replace(other.spec.head, body_model="0" * 64))
    path = str(save_estimator(other, tmp_path / "other.safetensors"))
    EstimateStage(EstimateConfig(weights=path, device="cpu", head="fastmetro")).setup()  # no fit: fine
    with pytest.raises(ConfigError, match="needs the same body model"):
        EstimateStage(EstimateConfig(weights=path, device="cpu", head="fastmetro", mesh_fit_steps=3)).setup()


def test_run_writes_each_tracks_mesh(tmp_path) -> None:
    """``hmrflow run`` with the FastMETRO head and ``estimate.vertices``: every track's npz has
    the mesh of its observed rows (pelvis at the origin) and NaN on the rows refinement filled."""
    from hmrflow.jobs.cli import main
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec

    spec = SceneSpec(name="fm", seed=31, people=1, seconds=1.5, fps=10.0, width=256, height=192, walkers=1.0)
    clip = render_clip(spec, tmp_path / "set", progress=False) / "fm.mp4"
    weights = (
        BUNDLED
        if BUNDLED.is_file()
        else save_estimator(build_estimator("tiny", HW, head="fastmetro"), tmp_path / "w.safetensors")
    )
    flags = [
        "--set",
        "estimate.head=fastmetro",
        "--set",
        "estimate.vertices=true",
        "--set",
        f"estimate.weights={weights}",
    ]
    assert main(["run", str(clip), "-o", str(tmp_path / "out"), *flags]) == 0
    files = sorted((tmp_path / "out" / "fm").glob("track_*.npz"))
    assert files
    j0 = load_body_model("synthetic").layer.J_regressor[0].numpy()
    for f in files:
        with np.load(f) as z:
            v, obs = z["vertices"], z["observed"]
            assert v.dtype == np.float16 and v.shape == (len(obs), j0.shape[0], 3)
            assert np.isfinite(v[obs]).all() and np.isnan(v[~obs]).all()
            assert np.abs(np.einsum("v,tvc->tc", j0, v[obs].astype(np.float32))).max() < 5e-3


def test_accelerate_merges_a_fastmetro_estimator(model, tmp_path) -> None:
    """``hmrflow accelerate`` on FastMETRO weights: a merged checkpoint that keeps the head."""
    from hmrflow.jobs import cli

    w = save_estimator(model, tmp_path / "fm.safetensors")
    args = ["accelerate", "--weights", str(w), "--n-calib", "4", "--cache", str(tmp_path / "c")]
    assert cli.main([*args, "--eps", "1e6", "--order", "span", "--out", str(tmp_path / "merged")]) == 0
    merged, plan = load_estimator(tmp_path / "merged.safetensors")
    assert plan is not None and plan.depth < 6 and merged.spec.head_kind == "fastmetro"
    assert isinstance(merged.head, FastMETROHead) and len(merged.backbone.blocks) == plan.depth


def test_manifest_names_the_fastmetro_weights() -> None:
    from hmrflow.jobs.pipelines import model_files
    from hmrflow.pipeline.config import load_config

    assert model_files(load_config("clip", ["estimate.head=fastmetro"]))["estimator"] == str(BUNDLED)
    assert model_files(load_config("clip"))["estimator"] == str(bundled_weights_path("tiny"))
