"""``hmrflow train prior-pairs`` and ``hmrflow bench refine-pairs`` on a rendered clip: the
pipeline's tracks are paired with the person their boxes cover, and refinement is scored on
them (what the bundled prior was trained and measured with, docs/refinement.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hmrflow.jobs.cli import main
from hmrflow.pipeline.types import FEATURE_DIM


def test_pairs_from_a_rendered_clip_then_refinement_scored_on_them(tmp_path: Path) -> None:
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec

    sets = tmp_path / "sets" / "mini"
    render_clip(SceneSpec(name="mini_000", seed=5, people=1, seconds=2.0, width=320, height=240), sets, progress=False)
    out = tmp_path / "pairs"
    assert main(["-q", "train", "prior-pairs", str(sets), "--out", str(out)]) == 0
    (f,) = sorted(out.glob("*.npz"))
    z = np.load(f)
    n = len(z["frame_idx"])
    assert n >= 30 and z["feature"].shape == (n, FEATURE_DIM) and z["feature"].dtype == np.float16
    assert np.abs(z["feature"][z["observed"]].astype(np.float32)).max(1).min() > 0  # every estimate has a feature
    assert z["gt_valid"][z["observed"]].mean() > 0.8  # the one person is found and matched
    # the matched ground truth is the rendered person (gt.npz), in the estimator's camera
    gt = np.load(sets / "mini_000" / "gt.npz")
    assert np.allclose(z["gt_betas"][z["gt_valid"]], gt["betas"][0])
    # the root keeps its true x and y; its depth is scaled by one factor (the pipeline's focal
    # length over the true one), so it projects where the person is with the pipeline's camera
    from hmrflow.priors.motion_diffusion.representation import ROOT_JOINT

    ok = z["gt_valid"]
    true = gt["transl"][z["frame_idx"][ok], 0]
    assert np.allclose(z["gt_transl"][ok][:, :2], true[:, :2], atol=1e-5)
    ratio = (z["gt_transl"][ok][:, 2] + ROOT_JOINT[2]) / (true[:, 2] + ROOT_JOINT[2])
    assert np.ptp(ratio) < 1e-4 and abs(ratio[0] - 1.0) > 1e-3
    assert main(["-q", "train", "prior-pairs", str(sets), "--out", str(out)]) == 0  # resumable: kept as is
    assert np.array_equal(np.load(f)["frame_idx"], z["frame_idx"])

    res_file = tmp_path / "res.json"
    assert main(["-q", "bench", "refine-pairs", str(out), "--threads", "1", "--json", str(res_file)]) == 0
    res = json.loads(res_file.read_text())
    s = res["sets"]["mini"]
    assert s["clips"] == 1 and s["frames"] > 20
    assert 0 < s["out_mpjpe"] < 400 and 0 < s["in_mpjpe"] < 400
    assert s["out_accel"] < s["in_accel"]  # refinement smooths the per-frame jitter
