"""Print container, codec, size, rotation, frame rate and frame count facts of videos.

One block per file (or a JSON list with ``--json``).  A file that cannot be read prints
``path: reason`` on one line (stderr) and the others are still probed; the exit code is
1 when any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hmrflow probe``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files to probe")
    parser.add_argument("--json", action="store_true", help="print a JSON list (one object per file)")
    parser.add_argument(
        "--max-pixels", type=int, default=None, help="refuse frames larger than this many pixels (default 8192*8192)"
    )


def format_info(info: Any) -> str:
    """Human-readable block for one :class:`~hmrflow.stages.video_probe.VideoInfo`."""
    rot = f", displayed {info.upright_width}x{info.upright_height}" if info.rotation else ""
    lines = [
        f"{info.path}",
        f"  container   {info.container}",
        f"  codec       {info.codec} ({info.pix_fmt})",
        f"  size        {info.width}x{info.height} stored, rotation {info.rotation} deg clockwise{rot}",
        f"  fps         {info.fps:.3f} nominal, {info.measured_fps:.3f} measured, "
        f"{'variable' if info.vfr else 'constant'} frame rate",
        f"  frames      {info.n_frames}"
        + (f" (container says {info.n_frames_container})" if info.n_frames_container not in (0, info.n_frames) else ""),
        f"  duration    {info.duration_s:.3f} s",
    ]
    if info.damage:
        lines.append(f"  damage      {info.damage}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Probe every file; return 1 if any failed, else 0."""
    from hmrflow.pipeline.errors import VideoDecodeError
    from hmrflow.stages.video_probe import DEFAULT_MAX_PIXELS, probe_video

    max_pixels = args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS
    results: list[dict[str, Any]] = []
    failed = 0
    for i, path in enumerate(args.videos):
        try:
            info = probe_video(path, max_pixels=max_pixels)
        except VideoDecodeError as exc:
            failed += 1
            print(f"{exc.path}: {exc.reason}", file=sys.stderr)
            if args.json:
                results.append({"path": exc.path, "error": exc.reason})
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            reason = f"internal error while probing ({type(exc).__name__}: {exc})"
            print(f"{path}: {reason}", file=sys.stderr)
            if args.json:
                results.append({"path": str(path), "error": reason})
            continue
        if args.json:
            results.append(info.to_dict())
        else:
            if i:
                print()
            print(format_info(info))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0
