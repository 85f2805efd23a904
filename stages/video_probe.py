"""Facts about a video file, read with PyAV before anything is decoded in bulk.

:func:`probe_video` opens the file, picks its video stream, demuxes every packet of that
stream (cheap: no decoding) to count frames and collect their timestamps, and decodes
only the first frame to read the display rotation (FFmpeg attaches the stream's display
matrix to decoded frames).  Everything that makes a file unusable raises
:class:`~hmrflow.pipeline.errors.VideoDecodeError` with a one-line reason; damage that
still leaves readable frames (a cut-off file whose index is at the front) is recorded in
``VideoInfo.damage`` so the decoder can decide what to do.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.pipeline.errors import VideoDecodeError
from hmrflow.pipeline.types import ClipRef

log = logging.getLogger(__name__)

#: Default refusal limit for frame sizes (same as ``DecodeConfig.max_pixels``).
DEFAULT_MAX_PIXELS = 8192 * 8192
#: Demuxers that read single still images rather than videos.
_IMAGE_DEMUXERS = ("image2", "image2pipe")
#: How many packets the probe tries to decode before giving up on finding a first frame.
_MAX_PACKETS_FOR_FIRST_FRAME = 256


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found.

    width/height: stored (coded) frame size; upright_width/upright_height: displayed size
    after ``rotation`` (clockwise degrees, 0/90/180/270).  ``fps`` is the container's
    nominal rate (0 when unknown, and possibly wrong for VFR files); ``measured_fps`` is
    (frames - 1) / (last pts - first pts).  ``n_frames`` counts the packets of the video
    stream; ``n_frames_container`` is what the header claims (0 = unknown).
    ``damage`` is empty for a clean scan, else a one-line description (e.g. truncation).
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    upright_width: int
    upright_height: int
    fps: float
    measured_fps: float
    vfr: bool
    n_frames: int
    n_frames_container: int
    duration_s: float
    pix_fmt: str = ""
    start_s: float = 0.0
    damage: str = ""

    @property
    def pixels(self) -> int:
        """Pixels per frame."""
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class ProbeScan:
    """:class:`VideoInfo` plus the sorted per-frame timestamps found while demuxing.

    pts_s: (n_frames,) float64 seconds from the stream start, ascending (presentation order),
        computed as ``(ticks - origin_ticks) * time_base`` (decoders use the same formula so
        timestamps compare exactly).
    """

    info: VideoInfo
    pts_s: np.ndarray
    origin_ticks: int = 0
    time_base: float = 0.0


# ---------------------------------------------------------------------- helpers
def _float(x: Any) -> float:
    try:
        v = float(x) if x is not None else 0.0
    except (TypeError, ValueError, ZeroDivisionError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _check_file(path: Path) -> int:
    """Size of the file in bytes, or VideoDecodeError for missing/empty/non-files."""
    if not path.exists():
        raise VideoDecodeError(str(path), "file not found")
    if path.is_dir():
        raise VideoDecodeError(str(path), "is a directory, not a video file")
    size = path.stat().st_size
    if size == 0:
        raise VideoDecodeError(str(path), "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(str(path), "file is not readable (permission denied)")
    return size


def _top_level_boxes(path: Path, limit: int = 64) -> list[bytes] | None:
    """Names of the top-level ISO-BMFF boxes (mp4/mov), or None if the file is not one."""
    boxes: list[bytes] = []
    size_total = path.stat().st_size
    with open(path, "rb") as fh:
        pos = 0
        while pos + 8 <= size_total and len(boxes) < limit:
            fh.seek(pos)
            head = fh.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if not kind.isalnum() and kind not in (b"free", b"skip"):
                break
            if size == 1 and len(head) >= 16:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = size_total - pos
            if size < 8:
                break
            boxes.append(kind)
            pos += size
    return boxes if boxes and boxes[0] == b"ftyp" else None


def _open_failure_reason(path: Path, exc: Exception) -> str:
    """One-line reason for a file FFmpeg refuses to open."""
    boxes = _top_level_boxes(path)
    if boxes is not None and b"moov" not in boxes:
        return "truncated or unfinished mp4/mov: no index (moov box) found; the file was probably cut off"
    head = path.read_bytes()[:512] if path.stat().st_size < 1 << 30 else b""
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "not a video: the file is plain text"
    detail = getattr(exc, "strerror", None) or str(exc)
    return f"not a video file FFmpeg can read ({detail})"


def _pick_video_stream(container: Any) -> Any | None:
    """The main video stream (skips cover-art 'attached pictures')."""
    candidates = []
    for s in container.streams.video:
        disp = str(getattr(s, "disposition", "") or "").lower()
        if "attached_pic" in disp:
            continue
        candidates.append(s)
    if not candidates:
        return None

    def area(s: Any) -> int:
        ctx = s.codec_context
        return int(ctx.width or 0) * int(ctx.height or 0) if ctx is not None else 0

    return max(candidates, key=area)


def _clockwise_rotation(frame: Any) -> tuple[int, bool]:
    """Clockwise display rotation snapped to 0/90/180/270, and whether snapping was needed."""
    ccw = _float(getattr(frame, "rotation", 0) or 0)
    cw = (-ccw) % 360.0
    snapped = int(round(cw / 90.0)) % 4 * 90
    return snapped, abs(((cw - snapped) + 180) % 360 - 180) > 1.0


def ticks_to_seconds(ticks: np.ndarray | int, origin: int, time_base: float) -> np.ndarray:
    """Seconds from the stream start: ``(ticks - origin) * time_base`` in float64."""
    return (np.asarray(ticks, np.int64) - np.int64(origin)).astype(np.float64) * np.float64(time_base)


# ------------------------------------------------------------------------ probe
def scan_video(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ProbeScan:
    """Probe ``path`` and return its :class:`VideoInfo` and sorted frame timestamps.

    Raises VideoDecodeError for: missing/empty/unreadable files, data FFmpeg cannot open,
    mp4/mov without index, files without a video stream (audio only), still images,
    codecs this FFmpeg build cannot decode, frames larger than ``max_pixels`` (checked
    before anything is decoded), and streams with no frames or no decodable frame.
    """
    import av

    p = Path(path)
    file_size = _check_file(p)
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(str(p), _open_failure_reason(p, exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(str(p), f"cannot open: {exc}") from None
    try:
        return _scan_open_container(p, container, file_size, max_pixels)
    finally:
        container.close()


def _scan_open_container(p: Path, container: Any, file_size: int, max_pixels: int | None) -> ProbeScan:
    import av

    fmt = container.format.name if container.format is not None else "unknown"
    stream = _pick_video_stream(container)
    if stream is None:
        others = [f"{s.type}:{s.codec_context.name if s.codec_context else '?'}" for s in container.streams]
        if any(s.type == "audio" for s in container.streams):
            raise VideoDecodeError(str(p), f"no video stream (audio only: {', '.join(others)})")
        raise VideoDecodeError(str(p), f"no video stream (streams: {', '.join(others) or 'none'})")
    if fmt in _IMAGE_DEMUXERS or fmt.endswith("_pipe"):
        raise VideoDecodeError(str(p), f"a still image ({fmt}), not a video")
    ctx = stream.codec_context
    if ctx is None:
        raise VideoDecodeError(str(p), "unsupported video codec: this FFmpeg build has no decoder for it")
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise VideoDecodeError(str(p), f"video stream has no valid frame size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise VideoDecodeError(
            str(p), f"frame size {width}x{height} exceeds the limit of {max_pixels} pixels (decode.max_pixels)"
        )

    tb = stream.time_base
    tb_f = _float(tb) or 1e-6
    start = stream.start_time
    nominal_fps = _float(stream.average_rate) or _float(stream.guessed_rate) or _float(stream.base_rate)
    n_container = int(stream.frames or 0)

    ticks: list[int] = []
    n_packets = 0
    damage = ""
    first_frame = None
    first_error = ""
    tried = 0
    past_end = False
    n_corrupt = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # flush marker
            n_packets += 1
            t = packet.pts if packet.pts is not None else packet.dts
            if t is not None:
                ticks.append(int(t))
            if packet.is_corrupt:
                n_corrupt += 1
            if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > file_size:
                past_end = True
            if first_frame is None and tried < _MAX_PACKETS_FOR_FIRST_FRAME:
                tried += 1
                try:
                    frames = ctx.decode(packet)
                except av.error.FFmpegError as exc:
                    first_error = first_error or (getattr(exc, "strerror", None) or str(exc))
                    frames = []
                if frames:
                    first_frame = frames[0]
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        damage = f"read error after {n_packets} frames ({reason})"
    if first_frame is None and n_packets:
        try:
            frames = ctx.decode(None)
            first_frame = frames[0] if frames else None
        except av.error.FFmpegError as exc:
            first_error = first_error or str(exc)

    if n_packets == 0:
        raise VideoDecodeError(str(p), "the video stream has no frames")
    if first_frame is None:
        why = f": {first_error}" if first_error else ""
        raise VideoDecodeError(str(p), f"no frame of the {ctx.name} stream could be decoded{why}")
    if not damage and n_container > n_packets:
        damage = f"truncated: the container lists {n_container} frames but only {n_packets} are in the file"
    if not damage and past_end:
        damage = "truncated: the last frame's data runs past the end of the file"
    if not damage and n_corrupt:
        damage = f"{n_corrupt} packet(s) flagged corrupt by the demuxer"

    rotation, odd = _clockwise_rotation(first_frame)
    if odd:
        log.warning(
            "%s: display rotation %s degrees is not a multiple of 90; using %d", p, first_frame.rotation, rotation
        )

    origin = start if start is not None else (min(ticks) if ticks else 0)
    pts_s = ticks_to_seconds(np.sort(np.asarray(ticks, np.int64)), int(origin), tb_f) if ticks else np.zeros(0)
    if len(pts_s) != n_packets:  # packets without timestamps (rare): fall back to the nominal rate
        pts_s = np.arange(n_packets, dtype=np.float64) / (nominal_fps or 30.0)

    measured = 0.0
    vfr = False
    if len(pts_s) >= 2 and pts_s[-1] > pts_s[0]:
        measured = float((len(pts_s) - 1) / (pts_s[-1] - pts_s[0]))
        gaps = np.diff(pts_s)
        med = float(np.median(gaps))
        tol = max(0.05 * med, 2.0 * tb_f)
        vfr = bool(np.any(np.abs(gaps - med) > tol))

    if stream.duration is not None and stream.duration > 0:
        duration = stream.duration * tb_f
    elif container.duration is not None and container.duration > 0:
        duration = container.duration / 1_000_000.0
    elif len(pts_s) >= 2:
        duration = float(pts_s[-1] - pts_s[0]) + 1.0 / (measured or nominal_fps or 30.0)
    else:
        duration = 0.0

    uw, uh = (height, width) if rotation in (90, 270) else (width, height)
    info = VideoInfo(
        path=str(p),
        container=fmt,
        codec=ctx.name,
        width=width,
        height=height,
        rotation=rotation,
        upright_width=uw,
        upright_height=uh,
        fps=round(nominal_fps, 6),
        measured_fps=round(measured, 6),
        vfr=vfr,
        n_frames=n_packets,
        n_frames_container=n_container,
        duration_s=round(float(duration), 6),
        pix_fmt=str(ctx.pix_fmt or first_frame.format.name),
        start_s=round(_float(start) * tb_f, 6) if start is not None else 0.0,
        damage=damage,
    )
    if damage:
        log.debug("%s: %s", p, damage)
    return ProbeScan(info=info, pts_s=pts_s, origin_ticks=int(origin), time_base=tb_f)


def probe_video(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Container, codec, size, rotation, rates, frame count and duration of a video.

    Cheap: demuxes the packets of the video stream and decodes one frame.  Raises
    :class:`VideoDecodeError` (see :func:`scan_video`) for files that cannot be decoded.
    """
    return scan_video(path, max_pixels=max_pixels).info


def to_clip_ref(info: VideoInfo, video_id: str) -> ClipRef:
    """The pipeline's :class:`ClipRef` for a probed video (upright size, nominal fps)."""
    fps = info.fps or info.measured_fps
    return ClipRef(
        video_id=video_id,
        path=info.path,
        fps=float(fps),
        n_frames=int(info.n_frames) if info.n_frames > 0 else -1,
        rotation=int(info.rotation),
        width=int(info.upright_width),
        height=int(info.upright_height),
        duration_s=float(info.duration_s),
    )
