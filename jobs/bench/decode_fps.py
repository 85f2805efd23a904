"""Decode throughput of the av and decord backends on generated clips.

    hmrflow bench decode [--frames 300] [--sizes 640x480 1280x720] [--threads 1]

Writes H.264 test clips (``tests``-style index pattern) into a temporary folder, then
times a bare PyAV loop (decode + RGB arrays, the yardstick) and ``DecodeStage`` end to end
(probe + decode to upright RGB uint8 batches) for each backend, with each backend's ratio to
the bare loop.  decord's time includes starting its worker process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_clip(path: Path, n_frames: int, width: int, height: int, fps: int = 30) -> None:
    """A textured H.264 clip (random blocks change every frame, so it is not trivially compressible)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast"}
        base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
        for i in range(n_frames):
            img = np.repeat(np.repeat(np.roll(base, i, axis=1), 8, 0), 8, 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def time_backend(path: Path, backend: str, threads: int, repeats: int = 2) -> tuple[float, int]:
    """Best-of-``repeats`` frames per second and frame count."""
    from hmrflow.pipeline.config import DecodeConfig
    from hmrflow.pipeline.types import ClipRef
    from hmrflow.stages.decode import DecodeStage

    best = float("inf")
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(len(b) for b in DecodeStage(DecodeConfig(backend=backend, threads=threads))(ClipRef("b", str(path))))
        best = min(best, time.perf_counter() - t0)
    return n / best, n


def time_raw_pyav(path: Path, threads: int, repeats: int = 2) -> tuple[float, int]:
    """Best-of-``repeats`` frames per second of a bare PyAV loop (open, decode, convert to RGB
    arrays): the yardstick of the decode stage, which adds probing, timestamps and batching."""
    import av

    best = float("inf")
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if threads != 1:
                stream.codec_context.thread_type = "AUTO"
                stream.codec_context.thread_count = threads
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
                n += 1
        best = min(best, time.perf_counter() - t0)
    return n / best, n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--threads", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = (int(x) for x in size.split("x"))
            path = Path(tmp) / f"{size}.mp4"
            write_clip(path, args.frames, w, h)
            raw, n = time_raw_pyav(path, args.threads)
            print(f"{size:>10} {'pyav':>7} threads={args.threads}: {raw:7.1f} fps ({n} frames, bare PyAV loop)")
            for backend in ("av", "decord"):
                fps, n = time_backend(path, backend, args.threads)
                print(
                    f"{size:>10} {backend:>7} threads={args.threads}: {fps:7.1f} fps ({n} frames, "
                    f"{fps / raw:.2f}x the bare PyAV loop)"
                )
    return 0
