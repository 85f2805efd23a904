"""`hmrflow accelerate` and `hmrflow bench estimator` end to end on small inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hmrflow.jobs import cli
from hmrflow.stages.mesh.checkpoint import bundled_weights_path, load_estimator

pytestmark = pytest.mark.skipif(not bundled_weights_path("tiny").is_file(), reason="bundled estimator weights absent")


def test_accelerate_budget_decides_the_depth(tmp_path) -> None:
    w = str(bundled_weights_path("tiny"))
    common = ["--weights", w, "--n-calib", "8", "--cache", str(tmp_path / "cache")]
    assert cli.main(["accelerate", *common, "--eps", "1e6", "--order", "span", "--out", str(tmp_path / "loose")]) == 0
    assert cli.main(["accelerate", *common, "--eps=-1e6", "--out", str(tmp_path / "strict"), "--fp16"]) == 0
    loose, plan = load_estimator(tmp_path / "loose.safetensors")
    assert plan is not None and plan.depth == len(loose.backbone.blocks) == 3  # spans 2,3: groups 1..2 and 3..5
    strict, plan_s = load_estimator(tmp_path / "strict.safetensors")
    assert plan_s is not None and plan_s.groups == () and len(strict.backbone.blocks) == 6
    report = json.loads((tmp_path / "loose.report.json").read_text())
    assert report["final_depth"] == 3 and report["flops"]["merged"]["total"] < report["flops"]["baseline"]["total"]
    assert "| 1 |" in (tmp_path / "loose.report.md").read_text()
    # fp16 storage: the strict (unmerged) file reproduces the original weights to half precision
    orig, _ = load_estimator(w)
    for a, b in zip(orig.parameters(), strict.parameters()):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_bench_estimator_reports_four_variants(tmp_path) -> None:
    out = tmp_path / "bench"
    # --weights given: the ECLM plan is searched here (without it the bundled merged checkpoint is used)
    args = [
        "bench",
        "estimator",
        "--out",
        str(out),
        "--weights",
        str(bundled_weights_path("tiny")),
        "--models",
        "tiny",
        "--batches",
        "2",
        "--reps",
        "1",
        "--n-eval",
        "8",
        "--n-calib",
        "8",
        "--eps",
        "1e6",
        "--order",
        "span",
        "--tome-r",
        "4,2",
        "--acc-sets",
        "",
        "--precision",
        "fp32",
        "--settings",
        "",
    ]
    assert cli.main(args) == 0
    rep = json.loads((out / "estimator_bench.json").read_text())
    rows = {r["variant"]: r for r in rep["throughput"]}
    assert set(rows) == {"baseline", "eclm", "tome", "both"}
    assert rows["both"]["gflops_per_crop"] < rows["eclm"]["gflops_per_crop"] < rows["baseline"]["gflops_per_crop"]
    assert rows["tome"]["gflops_per_crop"] < rows["baseline"]["gflops_per_crop"]
    assert rep["models"]["tiny"]["eclm"]["depth"] == 3
    acc = rep["accuracy"]["variants"]
    assert set(acc) == set(rows) and all(0 < a["pa_mpjpe_mm"] < 1000 for a in acc.values())
    assert (out / "estimator_tiny_eclm.safetensors").is_file() and "| both |" in (
        out / "estimator_bench.md"
    ).read_text()


def test_commands_leave_global_torch_state_alone(tmp_path) -> None:
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    assert (
        cli.main(
            [
                "accelerate",
                "--weights",
                str(bundled_weights_path("tiny")),
                "--n-calib",
                "8",
                "--eps",
                "1",
                "--cache",
                str(tmp_path),
                "--out",
                str(tmp_path / "w"),
            ]
        )
        == 0
    )
    assert torch.is_grad_enabled()
    assert torch.equal(torch.rand(3), want)


def test_headline_settings_merge_what_they_say() -> None:
    """The FastHMR and CameraHMR-like rows on a narrow 32-block ViT with HMR2.0's token grid:
    4 and 6 layer pairs merged, Mask-ToMe in blocks 1-3 only, about 45 % of tokens protected;
    FLOPs ratios above 1 and growing with the merged layers; every figure finite."""
    from dataclasses import replace

    from hmrflow.jobs.bench.estimator import headline_rows, person_cover
    from hmrflow.stages.mesh.model import SIZES

    cover = person_cover(8)
    assert cover.shape == (8, 16, 12) and abs(float(cover.float().mean()) - 0.45) < 0.05
    huge = SIZES["huge"]
    narrow = replace(
        huge,
        backbone=replace(huge.backbone, embed_dim=64, num_heads=4),
        head=replace(huge.head, context_dim=64, dim=64, depth=1, mlp_dim=64),
    )
    rows = headline_rows(["fasthmr", "camerahmr"], [2], 1, torch.device("cpu"), ["fp32"], size=narrow)
    by = {r["setting"]: r for r in rows}
    assert 1.2 < by["fasthmr"]["flops_ratio"] < by["camerahmr"]["flops_ratio"]
    for r in rows:
        assert r["speedup"] > 0 and np.isfinite(r["realised"]) and r["gflops_merged"] < r["gflops_unmerged"]


def test_bench_estimator_head_rows(tmp_path) -> None:
    """The head comparison: one SMPL-head and one FastMETRO estimator on the same crops."""
    from hmrflow.stages.mesh.checkpoint import save_estimator
    from hmrflow.stages.mesh.model import build_estimator

    torch.manual_seed(0)
    fm = save_estimator(build_estimator("tiny", (128, 96), head="fastmetro"), tmp_path / "fm.safetensors")
    out = tmp_path / "bench"
    heads = f"smpl={bundled_weights_path('tiny')},fm={fm}"
    args = ["bench", "estimator", "--out", str(out), "--models", "", "--n-eval", "4", "--n-calib", "4"]
    args += ["--acc-sets", "", "--settings", "", "--precision", "fp32", "--reps", "1"]
    assert cli.main([*args, "--heads", heads, "--heads-batches", "2", "--heads-n-eval", "8"]) == 0
    rep = json.loads((out / "estimator_bench.json").read_text())["heads"]
    smpl, mesh = rep["rows"]
    assert smpl["head"] == "smpl" and "mesh_pve_mm" not in smpl and smpl["pa_mpjpe_mm"] < 150
    assert mesh["head"] == "fastmetro" and mesh["attention_mask"] is True
    # an untrained mesh head is far off; the trained SMPL head is not
    assert mesh["mesh_pve_mm"] > smpl["pve_mm"] and mesh["flops_ratio"] > 1 and mesh["head_flops_ratio"] > 2
    assert [t["name"] for t in rep["timing"]] == ["smpl", "fm"] and rep["timing"][0]["time_ratio"] == 1.0
    assert "| fm | fastmetro | yes |" in (out / "estimator_bench.md").read_text()
    assert rep["fit_steps"] == 10 and "fit_pve_mm" in mesh and "fit_pve_mm" not in smpl
    assert cli.main([*args, "--heads", "nonsense"]) != 0


def test_bench_heads_command(tmp_path) -> None:
    """``hmrflow bench heads`` alone: the bundled estimators (or the named ones) side by side."""
    out = tmp_path / "heads"
    w = str(bundled_weights_path("tiny"))
    args = ["bench", "heads", "--out", str(out), "--heads", f"a={w},b={w}", "--batches", "2", "--n-eval", "8"]
    assert cli.main([*args, "--reps", "1", "--fit-steps", "0"]) == 0
    rep = json.loads((out / "heads_bench.json").read_text())
    a, b = rep["rows"]
    assert a["pa_mpjpe_mm"] == b["pa_mpjpe_mm"] and a["flops_ratio"] == b["flops_ratio"] == 1.0  # the same file twice
    assert "| a | smpl | - |" in (out / "heads_bench.md").read_text()
