"""LocalRunner chaining, with small in-test stages standing in for the model stages."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from hmrflow.pipeline.results import VideoResult
from hmrflow.pipeline.runner import LocalRunner
from hmrflow.pipeline.stage import BaseStage, Resources, Stage
from hmrflow.pipeline.types import ClipRef, FrameBatch, MeshEstimates, SMPLSequence, TrackedEstimates


class CountingDecode(BaseStage):
    """Yields n frames in batches of 4; frame i has brightness i."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.setups = n, 0

    def setup(self) -> None:
        self.setups += 1

    def __call__(self, clip: ClipRef) -> Iterator[FrameBatch]:
        for s in range(0, self.n, 4):
            idx = np.arange(s, min(s + 4, self.n))
            imgs = np.broadcast_to(idx[:, None, None, None].astype(np.uint8), (len(idx), 8, 8, 3)).copy()
            yield FrameBatch(clip.video_id, idx, idx / 10.0, imgs)


class BrightnessToPerson(BaseStage):
    """One 'person' per frame whose x translation is the frame brightness."""

    resources = Resources(cpus=1, gpus=0)

    def __call__(self, fb: FrameBatch) -> MeshEstimates:
        n = len(fb)
        return MeshEstimates(
            video_id=fb.video_id,
            frame_idx=fb.frame_idx,
            pts=fb.pts,
            boxes_xyxy=np.zeros((n, 4), np.float32),
            scores=np.ones(n, np.float32),
            rotmats=np.broadcast_to(np.eye(3, dtype=np.float32), (n, 24, 3, 3)).copy(),
            betas=np.zeros((n, 10), np.float32),
            cam_t=np.stack([fb.images[:, 0, 0, 0].astype(np.float32), np.zeros(n), np.full(n, 5.0)], 1).astype(
                np.float32
            ),
            focal=np.full(n, 500, np.float32),
            confidence=np.ones(n, np.float32),
        )


class OneTrack(BaseStage):
    def __call__(self, est: MeshEstimates) -> TrackedEstimates:
        f = {k: getattr(est, k) for k in ("video_id", *MeshEstimates.ROW_FIELDS)}
        return TrackedEstimates(**f, track_id=np.zeros(len(est), np.int64))


def to_sequences(tr: TrackedEstimates) -> list[SMPLSequence]:
    return [
        SMPLSequence(
            tr.video_id,
            0,
            np.zeros(10, np.float32),
            tr.frame_idx,
            tr.pts,
            np.ones(len(tr), bool),
            tr.rotmats,
            tr.cam_t,
            tr.confidence,
        )
    ]


class Collect(BaseStage):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root, self.results = root, []

    def __call__(self, r: VideoResult) -> Path:
        self.results.append(r)
        return self.root / r.clip.video_id


def test_local_runner_chains_and_sets_up_once(tmp_path: Path) -> None:
    dec, write = CountingDecode(10), Collect(tmp_path)
    runner = LocalRunner(
        decode=dec,
        frame_stages=[BrightnessToPerson()],
        track=OneTrack(),
        to_sequences=to_sequences,
        write=write,
        config={"seed": 0},
        progress=False,
    )
    out1 = runner.run(ClipRef("a", "a.mp4", n_frames=10))
    runner.run(ClipRef("b", "b.mp4", n_frames=10))
    assert dec.setups == 1
    assert out1 == tmp_path / "a"
    res = write.results[0]
    (seq,) = res.sequences
    assert seq.frame_idx.tolist() == list(range(10))
    assert seq.transl[:, 0].tolist() == list(range(10))  # values flowed through every stage
    assert res.extra["n_frames_decoded"] == 10
    assert {"CountingDecode", "BrightnessToPerson", "OneTrack", "total"} <= set(res.timings_s)
    # the camera the camera-frame outputs refer to: estimator focal, centre of the decoded 8x8 frames
    assert res.extra["camera"] == {"model": "pinhole", "focal_px": 500.0, "cx": 4.0, "cy": 4.0, "width": 8, "height": 8}


def test_empty_video_writes_no_tracks(tmp_path: Path) -> None:
    write = Collect(tmp_path)
    runner = LocalRunner(
        decode=CountingDecode(0),
        frame_stages=[BrightnessToPerson()],
        track=OneTrack(),
        to_sequences=to_sequences,
        write=write,
        progress=False,
    )
    runner.run(ClipRef("e", "e.mp4"))
    assert write.results[0].sequences == []
    assert "camera" not in write.results[0].extra  # nobody found: no camera to record


def test_last_frame_stage_must_return_estimates(tmp_path: Path) -> None:
    runner = LocalRunner(
        decode=CountingDecode(4),
        frame_stages=[],
        track=OneTrack(),
        to_sequences=to_sequences,
        write=Collect(tmp_path),
        progress=False,
    )
    with pytest.raises(TypeError, match="MeshEstimates"):
        runner.run(ClipRef("x", "x.mp4"))


def test_stage_protocol_and_actor_rule() -> None:
    assert isinstance(BrightnessToPerson(), Stage)
    assert CountingDecode(1).needs_actor()  # has its own setup -> keep alive as an actor
    assert not BrightnessToPerson().needs_actor()  # stateless CPU -> Ray task


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_frame_part_gives_the_same_rows_with_decoding_ahead_or_in_line(ahead: int) -> None:
    from hmrflow.pipeline.runner import run_frame_part

    part = run_frame_part(CountingDecode(10), [BrightnessToPerson()], ClipRef("a", "a.mp4"), decode_ahead=ahead)
    assert part.n_frames == 10
    assert part.estimates is not None and part.estimates.cam_t[:, 0].tolist() == list(range(10))
    assert part.timings_s["CountingDecode"] >= 0.0 and "decode_wait" in part.timings_s


class FailingDecode(CountingDecode):
    def __call__(self, clip: ClipRef) -> Iterator[FrameBatch]:
        yield from super().__call__(clip)
        raise RuntimeError(f"{clip.path}: truncated after {self.n} frames")


def test_a_decode_error_reaches_the_runner_from_the_decoding_thread() -> None:
    from hmrflow.pipeline.runner import run_frame_part

    seen: list[int] = []
    with pytest.raises(RuntimeError, match="a.mp4: truncated after 8 frames"):
        run_frame_part(FailingDecode(8), [BrightnessToPerson()], ClipRef("a", "a.mp4"), on_batch=seen.append)
    assert seen == [4, 4]  # the batches before the error were processed
