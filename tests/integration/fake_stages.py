"""Small real stages standing in for the model stages in runner/batch tests.

They compute from the decoded pixels (so values really flow decode -> ... -> write) and are
deterministic.  ``make_spec(cfg, out_root)`` is a ``--pipeline`` builder for
``hmrflow batch``: real probe, DecodeStage and WriteStage, these stages in between.
Environment knobs (read by ``make_spec`` only, for subprocess tests):
``HMRFLOW_FAKE_DELAY_S`` sleeps that long after every decoded batch.
Files whose name contains ``hang`` stop delivering frames after the first batch; files
whose name contains ``crash`` kill their worker process (SIGKILL) on the first batch.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from hmrflow.pipeline.assembly import PipelineSpec
from hmrflow.pipeline.results import DetectedFrames
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import (
    MASK_RES,
    ClipRef,
    Detections,
    FrameBatch,
    MeshEstimates,
    SMPLSequence,
    TrackedEstimates,
)


class BandDetect(BaseStage):
    """Two 'people' per frame: the left and right halves; score = mean brightness of the half."""

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=0.0)

    def __call__(self, fb: FrameBatch) -> DetectedFrames:
        f, h, w = fb.images.shape[:3]
        boxes = np.array([[0, 0, w // 2, h], [w // 2, 0, w, h]], np.float32)
        imgs = fb.images.astype(np.float32)
        left = imgs[:, :, : w // 2].mean(axis=(1, 2, 3)) / 255.0
        right = imgs[:, :, w // 2 :].mean(axis=(1, 2, 3)) / 255.0
        scores = np.stack([left, right], 1).reshape(-1).astype(np.float32)
        det = Detections(
            video_id=fb.video_id,
            frame_idx=np.repeat(fb.frame_idx, 2),
            pts=np.repeat(fb.pts, 2),
            boxes_xyxy=np.tile(boxes, (f, 1)),
            scores=scores,
            masks=np.ones((2 * f, MASK_RES, MASK_RES), bool),
        )
        return DetectedFrames(frames=fb, detections=det)


class PixelEstimate(BaseStage):
    """'Mesh' from pixels: root rotation about z by the crop's mean red, x = crop mean green."""

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=0.0)

    def __init__(self, pid_dir: str | None = None) -> None:
        super().__init__()
        self.weights: np.ndarray | None = None
        self.pid_dir = pid_dir

    def setup(self) -> None:  # a stage with weights: kept alive as an actor
        self.weights = np.linspace(0.5, 1.5, 10, dtype=np.float32)
        if self.pid_dir:  # lets fault tests find (and kill) the process that runs this stage
            Path(self.pid_dir, str(os.getpid())).touch()
        super().setup()

    def __call__(self, df: DetectedFrames) -> MeshEstimates:
        assert self.weights is not None, "setup() not called"
        det, imgs = df.detections, df.frames.images
        pos = {int(k): i for i, k in enumerate(df.frames.frame_idx)}
        n = len(det)
        red = np.zeros(n, np.float32)
        green = np.zeros(n, np.float32)
        for r in range(n):
            x0, y0, x1, y1 = det.boxes_xyxy[r].astype(int)
            crop = imgs[pos[int(det.frame_idx[r])], y0:y1, x0:x1].astype(np.float32) / 255.0
            red[r], green[r] = crop[..., 0].mean(), crop[..., 1].mean()
        ang = red * np.pi
        rot = np.broadcast_to(np.eye(3, dtype=np.float32), (n, 24, 3, 3)).copy()
        rot[:, 0, 0, 0] = np.cos(ang)
        rot[:, 0, 0, 1] = -np.sin(ang)
        rot[:, 0, 1, 0] = np.sin(ang)
        rot[:, 0, 1, 1] = np.cos(ang)
        side = (det.boxes_xyxy[:, 0] > 0).astype(np.float32)
        cam_t = np.stack([side * 1.0 + green, 0.1 * red, np.full(n, 5.0, np.float32)], 1).astype(np.float32)
        return MeshEstimates(
            video_id=det.video_id,
            frame_idx=det.frame_idx,
            pts=det.pts,
            boxes_xyxy=det.boxes_xyxy,
            scores=det.scores,
            rotmats=rot,
            betas=np.outer(green, self.weights).astype(np.float32),
            cam_t=cam_t,
            focal=np.full(n, 500.0, np.float32),
            confidence=det.scores,
        )


class SideTrack(BaseStage):
    """Track id = which half of the frame (0 left, 1 right); rows sorted by (frame, track)."""

    def __call__(self, est: MeshEstimates) -> TrackedEstimates:
        tid = (est.boxes_xyxy[:, 0] > 0).astype(np.int64)
        order = np.lexsort((tid, est.frame_idx))
        sub = est.select(order)
        cols = {k: getattr(sub, k) for k in MeshEstimates.ROW_FIELDS}
        return TrackedEstimates(video_id=est.video_id, track_id=tid[order], **cols)


def side_sequences(tr: TrackedEstimates) -> list[SMPLSequence]:
    """One sequence per track id; betas = mean of the track's betas."""
    out = []
    for k in np.unique(tr.track_id):
        rows = np.flatnonzero(tr.track_id == k)
        out.append(
            SMPLSequence(
                video_id=tr.video_id,
                track_id=int(k),
                betas=tr.betas[rows].mean(0).astype(np.float32),
                frame_idx=tr.frame_idx[rows],
                pts=tr.pts[rows],
                observed=np.ones(rows.size, bool),
                rotmats=tr.rotmats[rows],
                transl=tr.cam_t[rows],
                confidence=tr.confidence[rows],
            )
        )
    return out


class SmoothRefine(BaseStage):
    """3-tap moving average of the translation (ends kept); has a setup, so it is an actor."""

    def setup(self) -> None:
        self.kernel = np.array([0.25, 0.5, 0.25], np.float64)
        super().setup()

    def __call__(self, seq: SMPLSequence) -> SMPLSequence:
        t = seq.transl.astype(np.float64)
        sm = t.copy()
        if len(t) >= 3:
            sm[1:-1] = self.kernel[0] * t[:-2] + self.kernel[1] * t[1:-1] + self.kernel[2] * t[2:]
        import dataclasses

        return dataclasses.replace(seq, transl=sm.astype(np.float32))


class FaultyDecode(BaseStage):
    """Wraps a decode stage: optional delay per batch, 'hang' and 'crash' files (see module doc)."""

    def __init__(self, inner: Any, delay_s: float = 0.0) -> None:
        super().__init__()
        self.inner, self.delay_s = inner, float(delay_s)

    def setup(self) -> None:
        if hasattr(self.inner, "setup"):
            self.inner.setup()
        super().setup()

    def __call__(self, clip: ClipRef) -> Iterator[FrameBatch]:
        name = Path(clip.path).name
        for i, batch in enumerate(self.inner(clip)):
            if "crash" in name:
                os.kill(os.getpid(), signal.SIGKILL)
            if "hang" in name and i >= 1:
                while True:  # a decoder that never returns
                    time.sleep(3600)
            if self.delay_s:
                time.sleep(self.delay_s)
            yield batch


def fake_spec(
    out_root: str | os.PathLike[str],
    config: dict[str, Any] | None = None,
    delay_s: float = 0.0,
    batch_size: int = 8,
    refine: bool = True,
    decode_cfg: Any = None,
    pid_dir: str | None = None,
) -> PipelineSpec:
    """Real probe/decode/write around the fake model stages."""
    from hmrflow.jobs.pipelines import probe_clip
    from hmrflow.pipeline.config import DecodeConfig, WriteConfig
    from hmrflow.stages.decode import DecodeStage
    from hmrflow.stages.write import WriteStage

    dec = DecodeStage(decode_cfg or DecodeConfig(batch_size=batch_size))
    return PipelineSpec(
        probe=probe_clip,
        decode=FaultyDecode(dec, delay_s),
        frame_stages=(BandDetect(), PixelEstimate(pid_dir)),
        track=SideTrack(),
        to_sequences=side_sequences,
        refine=SmoothRefine() if refine else None,
        write=WriteStage(WriteConfig(), out_root),
        config=dict(config or {"preset": "test", "seed": 0}),
    )


def make_spec(cfg: Any, out_root: Path) -> PipelineSpec:
    """``--pipeline tests.integration.fake_stages:make_spec`` (decode batch size from cfg)."""
    delay = float(os.environ.get("HMRFLOW_FAKE_DELAY_S", "0") or 0)
    return fake_spec(out_root, config=cfg.resolved_dict(), delay_s=delay, decode_cfg=cfg.decode)


def assert_same_outputs(a: Path, b: Path, atol: float = 1e-5) -> None:
    """Two ``OUT/<video_id>/`` folders hold the same tracks (to ``atol``) and stable manifests."""
    import json

    import pandas as pd

    from hmrflow.pipeline.provenance import stable_part

    names_a = sorted(p.name for p in Path(a).iterdir())
    assert names_a == sorted(p.name for p in Path(b).iterdir()), (names_a, sorted(p.name for p in Path(b).iterdir()))
    ta, tb = pd.read_parquet(Path(a) / "tracks.parquet"), pd.read_parquet(Path(b) / "tracks.parquet")
    assert list(ta.columns) == list(tb.columns) and len(ta) == len(tb)
    for col in ta.columns:
        va, vb = np.stack(ta[col].to_numpy()), np.stack(tb[col].to_numpy())
        if va.dtype.kind in "fc":
            np.testing.assert_allclose(va, vb, atol=atol, rtol=0, err_msg=col)
        else:
            assert np.array_equal(va, vb), col
    for name in names_a:
        if name.endswith(".npz"):
            with np.load(Path(a) / name) as za, np.load(Path(b) / name) as zb:
                assert sorted(za.files) == sorted(zb.files)
                for k in za.files:
                    if za[k].dtype.kind in "fc":
                        np.testing.assert_allclose(za[k], zb[k], atol=atol, rtol=0, err_msg=f"{name}:{k}")
                    else:
                        assert np.array_equal(za[k], zb[k]), f"{name}:{k}"
    ma = json.loads((Path(a) / "manifest.json").read_text())
    mb = json.loads((Path(b) / "manifest.json").read_text())
    assert stable_part(ma) == stable_part(mb)
