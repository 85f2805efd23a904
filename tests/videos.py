"""Test videos written with PyAV: known frame order, orientation, timing and damage.

Every helper writes into a path the caller chooses (a pytest ``tmp_path``); nothing is
downloaded.  Frames carry a readable pattern so that tests can check ORDER and
ORIENTATION of decoded frames:

* ``pattern="index"`` (default): mid-grey background; a red block in the top-left corner
  (the orientation marker: :func:`marker_corner` says where it ended up); a band of
  ``INDEX_BITS`` cells across the middle rows encoding the frame index in binary
  (bright = 1, dark = 0, most significant bit left; :func:`read_index` decodes it).
  Readable for frames at least 64 pixels wide, also after a moderate resize.
* ``pattern="solid"``: one flat grey level per frame (``solid_level(i)``) — for tiny sizes.

``size`` is always the *upright* (displayed) ``(width, height)``.  With ``rotation`` (a
clockwise display rotation of 0/90/180/270 degrees) the file stores the picture rotated
the other way and carries a display matrix, exactly like a phone video: a decoder that
honours the rotation shows the upright pattern with the marker top-left.

Damage helpers (:func:`truncate`, :func:`corrupt_middle`, :func:`make_unknown_codec`, ...)
copy a good file into a broken one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

#: Number of binary cells in the index band (frame indices are taken modulo 2**INDEX_BITS).
INDEX_BITS = 10
#: Background grey of the index pattern.
BACKGROUND = 96
#: Orientation marker colour (RGB).
MARKER_RGB = (220, 30, 30)

Pattern = Literal["index", "solid"]


@dataclass(frozen=True)
class WrittenVideo:
    """What :func:`make_video` wrote.

    pts: (n_frames,) float64 seconds of each frame, in presentation order.
    size: upright (width, height); stored_size: (width, height) as encoded.
    """

    path: Path
    n_frames: int
    size: tuple[int, int]
    stored_size: tuple[int, int]
    fps: float
    rotation: int
    pts: np.ndarray
    codec: str


# ----------------------------------------------------------------------- patterns
def solid_level(i: int) -> int:
    """Grey level of frame ``i`` in the ``"solid"`` pattern (distinct for 8 neighbours)."""
    return 24 + (i * 53) % 208


def draw_frame(i: int, size: tuple[int, int], pattern: Pattern = "index", texture: bool = True) -> np.ndarray:
    """The upright picture of frame ``i``: (height, width, 3) uint8 RGB.

    texture: fill the bottom quarter of an ``"index"`` frame with per-frame random blocks so
        the encoded frames carry real payload (damage then hits frame data, not only headers).
    """
    w, h = size
    if pattern == "solid":
        return np.full((h, w, 3), solid_level(i), np.uint8)
    if pattern != "index":
        raise ValueError(f"unknown pattern {pattern!r}")
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    if texture and h >= 16:
        y_tex = h - h // 4
        rng = np.random.default_rng(1000 + i)
        blocks = rng.integers(40, 160, ((h - y_tex + 3) // 4, (w + 3) // 4, 3), dtype=np.uint8)
        img[y_tex:] = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[: h - y_tex, :w]
    mh, mw = max(2, h // 5), max(2, w // 5)
    img[:mh, :mw] = MARKER_RGB
    y0, y1 = int(h * 0.4), max(int(h * 0.4) + 2, int(h * 0.6))
    code = i % (1 << INDEX_BITS)
    for b in range(INDEX_BITS):
        x0, x1 = (b * w) // INDEX_BITS, ((b + 1) * w) // INDEX_BITS
        bit = (code >> (INDEX_BITS - 1 - b)) & 1
        img[y0:y1, x0:x1] = 235 if bit else 16
    return img


def read_index(img: np.ndarray) -> int:
    """Decode the frame index of an upright ``"index"``-pattern image (H, W, 3) uint8."""
    h, w = img.shape[:2]
    y0, y1 = int(h * 0.4), max(int(h * 0.4) + 2, int(h * 0.6))
    band = img[y0:y1].astype(np.float32).mean(axis=(0, 2))  # (W,)
    code = 0
    for b in range(INDEX_BITS):
        x0, x1 = (b * w) // INDEX_BITS, ((b + 1) * w) // INDEX_BITS
        inner = band[x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4 or x1]
        code = (code << 1) | int(inner.mean() > 125)
    return code


def marker_corner(img: np.ndarray) -> str:
    """Which corner holds the red orientation marker: ``"tl"``, ``"tr"``, ``"bl"`` or ``"br"``."""
    h, w = img.shape[:2]
    redness = img[..., 0].astype(np.float32) - img[..., 1:].astype(np.float32).mean(-1)
    ch, cw = max(1, h // 10), max(1, w // 10)
    corners = {
        "tl": redness[:ch, :cw],
        "tr": redness[:ch, -cw:],
        "bl": redness[-ch:, :cw],
        "br": redness[-ch:, -cw:],
    }
    return max(corners, key=lambda k: float(corners[k].mean()))


# ----------------------------------------------------------------------- writing
def vfr_pts(n_frames: int, fps: float, seed: int = 0) -> np.ndarray:
    """Irregular, strictly increasing timestamps (seconds, multiples of 1 ms) averaging ``fps``.

    Frame gaps cycle through 0.5x, 1x, 2x, 1x and 0.75x the nominal period, which a
    constant-rate reader gets visibly wrong.
    """
    factors = np.array([0.5, 1.0, 2.0, 1.0, 0.75])
    rng = np.random.default_rng(seed)
    factors = factors[rng.permutation(len(factors))]
    gaps_ms = np.maximum(1, np.round(1000.0 / fps * np.resize(factors, max(0, n_frames - 1))))
    return np.concatenate([[0.0], np.cumsum(gaps_ms)]) / 1000.0


def make_video(
    path: str | os.PathLike[str],
    n_frames: int = 30,
    size: tuple[int, int] = (128, 96),
    fps: float = 30.0,
    rotation: int = 0,
    vfr: bool = False,
    codec: str = "libx264",
    pattern: Pattern = "index",
    faststart: bool = False,
    preset: str = "veryfast",
    gop: int | None = None,
    pts: Sequence[float] | None = None,
) -> WrittenVideo:
    """Write a test video; the container follows the suffix of ``path`` (.mp4, .mkv, .mov, ...).

    rotation: clockwise display rotation (0/90/180/270) stored as the stream's display
        matrix; the frames are encoded rotated the other way so the displayed picture is
        the upright pattern.
    vfr: irregular timestamps from :func:`vfr_pts` (or pass ``pts`` in seconds; they are
        rounded to milliseconds).
    faststart: for mp4/mov, put the index (moov) at the front (``movflags=faststart``).
    gop: keyframe interval (``None`` = the encoder's default).
    """
    import av

    if rotation % 90 or not 0 <= rotation < 360:
        raise ValueError(f"rotation must be 0, 90, 180 or 270, got {rotation}")
    path = Path(path)
    w, h = size
    sw, sh = (h, w) if rotation in (90, 270) else (w, h)
    if pts is None:
        times = vfr_pts(n_frames, fps) if vfr else np.arange(n_frames) / fps
    else:
        times = np.asarray(pts, np.float64)
        if len(times) != n_frames:
            raise ValueError("pts must have n_frames entries")
    irregular = vfr or pts is not None
    options: dict[str, str] = {}
    if faststart:
        options["movflags"] = "faststart"
    from fractions import Fraction

    with av.open(str(path), mode="w", options=options) as out:
        rate = Fraction(fps).limit_denominator(1001)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = sw, sh
        stream.pix_fmt = "yuv420p"
        codec_opts: dict[str, str] = {}
        if codec == "libx264":
            codec_opts["preset"] = preset
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.options = codec_opts
        tb = Fraction(1, 1000) if irregular else 1 / rate
        stream.codec_context.time_base = tb
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        if n_frames == 0:
            out.start_encoding()  # writes the header: a valid container with an empty video track
        for i in range(n_frames):
            upright = draw_frame(i, (w, h), pattern)
            stored = np.ascontiguousarray(np.rot90(upright, k=rotation // 90))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = int(round(times[i] * 1000)) if irregular else i
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    if irregular:
        times = np.round(times * 1000) / 1000.0
    return WrittenVideo(path, n_frames, (w, h), (sw, sh), float(fps), rotation, np.asarray(times, np.float64), codec)


def make_audio_only(path: str | os.PathLike[str], seconds: float = 0.5, rate: int = 16000) -> Path:
    """An audio-only file (AAC in mp4/m4a, or whatever the suffix's default audio codec is)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame_size = 1024
        for start in range(0, n, frame_size):
            chunk = samples[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_png(path: str | os.PathLike[str], size: tuple[int, int] = (32, 24)) -> Path:
    """A still PNG image (something FFmpeg opens as a one-frame 'video')."""
    import av

    path = Path(path)
    frame = av.VideoFrame.from_ndarray(draw_frame(0, size), format="rgb24")
    with av.open(str(path), mode="w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height = size
        stream.pix_fmt = "rgb24"
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write raw bytes (empty files, text files)."""
    path = Path(path)
    path.write_bytes(data)
    return path


def write_garbage(path: str | os.PathLike[str], n_bytes: int = 20000, seed: int = 0) -> Path:
    """Random bytes under a video-like name."""
    return write_bytes(path, np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())


# ------------------------------------------------------------------------ damage
def truncate(src: str | os.PathLike[str], dst: str | os.PathLike[str], keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a cut-off download).

    For an mp4 written normally (index at the end) the index is lost; for one written
    with ``faststart=True`` the index survives and points past the end of the file.
    """
    data = Path(src).read_bytes()
    return write_bytes(dst, data[: int(len(data) * keep)])


def _mdat_payload(data: bytes) -> tuple[int, int] | None:
    """(start, end) byte range of the first top-level ``mdat`` box's payload of an mp4/mov."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            return None
        if kind == b"mdat":
            return pos + header, min(len(data), pos + size)
        pos += size
    return None


def corrupt_middle(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    at: float = 0.5,
    n_bytes: int = 4096,
    seed: int = 0,
) -> Path:
    """Copy ``src`` with ``n_bytes`` random bytes overwritten starting at fraction ``at``.

    For mp4/mov files ``at`` is a fraction of the media data (``mdat``) payload, so the
    damage hits frames and never the container's index; otherwise of the whole file.
    """
    data = bytearray(Path(src).read_bytes())
    lo, hi = _mdat_payload(bytes(data)) or (0, len(data))
    start = lo + int((hi - lo) * at)
    end = min(hi, start + n_bytes)
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return write_bytes(dst, bytes(data))


def make_unknown_codec(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy an H.264 mp4 with its sample-entry fourcc ``avc1`` renamed to ``zzzz``.

    The container stays valid but no decoder exists for the codec (an "unsupported codec").
    """
    data = Path(src).read_bytes()
    if data.count(b"avc1") < 1:
        raise ValueError(f"{src}: no 'avc1' sample entry to rename (write it with codec='libx264' into .mp4)")
    return write_bytes(dst, data.replace(b"avc1", b"zzzz"))


def upright_from_stored(stored: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a clockwise display rotation to a stored (H, W, 3) frame."""
    return np.rot90(stored, k=-(rotation // 90))
