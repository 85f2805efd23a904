"""GPU smoke tests: skipped without CUDA (tests/conftest.py), run with ``pytest -m gpu`` on a GPU machine.

The bundled models on ``cuda`` give what they give on the CPU (the estimator under bf16
autocast to within a loose tolerance), and ``device=auto`` picks the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hmrflow.pipeline.config import DetectConfig, EstimateConfig, RefineConfig
from hmrflow.pipeline.devices import resolve_device

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> "object":
    from hmrflow.jobs.synth.clip import render_clip
    from hmrflow.jobs.synth.scene import SceneSpec
    from hmrflow.pipeline.types import FrameBatch

    d = render_clip(
        SceneSpec(name="g", seed=5, people=2, seconds=0.5, width=320, height=240),
        tmp_path_factory.mktemp("g"),
        progress=False,
    )
    import av

    with av.open(str(Path(d) / "g.mp4")) as c:
        imgs = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    n = len(imgs)
    return FrameBatch("g", np.arange(n, dtype=np.int64), np.arange(n) / 30.0, imgs)


def test_auto_resolves_to_the_gpu() -> None:
    assert resolve_device("auto").type == "cuda"


def test_detect_and_estimate_on_cuda_match_the_cpu(frames) -> None:
    from hmrflow.stages.detect.stage import DetectStage
    from hmrflow.stages.mesh.stage import EstimateStage

    det_cpu, det_gpu = DetectStage(DetectConfig(device="cpu")), DetectStage(DetectConfig(device="cuda"))
    a, b = det_cpu(frames), det_gpu(frames)
    assert len(a.detections) == len(b.detections) > 0
    np.testing.assert_allclose(a.detections.boxes_xyxy, b.detections.boxes_xyxy, atol=1.0)
    est_cpu = EstimateStage(EstimateConfig(device="cpu", precision="fp32"))
    est_gpu = EstimateStage(EstimateConfig(device="cuda", precision="bf16"))
    ea, eb = est_cpu(a), est_gpu(a)
    assert eb.rotmats.dtype == np.float32
    # bf16 on the GPU against fp32 on the CPU: the same bodies to within a few centimetres
    assert np.abs(ea.cam_t - eb.cam_t).max() < 0.1
    assert np.abs(ea.rotmats - eb.rotmats).mean() < 0.05


def test_refine_on_cuda_matches_the_cpu() -> None:
    from hmrflow.pipeline.types import SMPLSequence
    from hmrflow.stages.refine.stage import RefineStage

    n = 40
    rng = np.random.default_rng(0)
    rot = np.tile(np.eye(3, dtype=np.float32), (n, 24, 1, 1))
    seq = SMPLSequence(
        "g",
        1,
        np.zeros(10, np.float32),
        np.arange(n, dtype=np.int64),
        np.arange(n) / 30.0,
        np.ones(n, bool),
        rot,
        (rng.normal(0, 0.01, (n, 3)) + [0, 0, 4]).astype(np.float32),
        np.ones(n, np.float32),
    )
    a = RefineStage(RefineConfig(device="cpu"))(seq)
    b = RefineStage(RefineConfig(device="cuda"))(seq)
    np.testing.assert_allclose(a.transl, b.transl, atol=1e-3)
    assert torch.cuda.is_available()
