"""Decode stage: ``ClipRef -> Iterator[FrameBatch]`` of upright RGB frames with timestamps.

The file is probed first (:func:`~hmrflow.stages.video_probe.scan_video`): bad files fail
fast with a one-line :class:`VideoDecodeError`, frames larger than ``max_pixels`` are
refused before anything is decoded, and the probe's sorted packet timestamps become the
table that maps every decoded frame to its original index (so indices stay right even
when damaged frames are dropped, and both backends agree exactly).

Two backends give the same frames, indices and timestamps:

* ``"av"`` (default): PyAV in this process; rotation applied here with ``np.rot90``.
* ``"decord"``: decord in a separate worker process (see :mod:`.decode_decord`) that is
  killed when it stalls for ``decord_timeout_s``; decord rotates frames itself.
  ``"auto"`` uses decord when it is installed and the probe found no damage, and falls
  back to PyAV (resuming after the last frame already delivered) on any decord failure.

Frame selection is by timestamp (:class:`SlotSelector`): with ``target_fps`` the time
axis is cut into slots of ``1/target_fps`` seconds and the first frame in each slot is
kept, which works for variable frame rates.  Memory stays bounded: one batch of
``batch_size`` frames at a time.

A time window (``decode.start``/``decode.end`` or the clip's own ``start``/``end``; see
:mod:`hmrflow.pipeline.window`) is resolved on the probe's table before anything is
decoded; both backends seek to it (PyAV to the keyframe before its first frame, decord
exactly) and stop after its last frame.  Subsampling and ``max_frames`` apply within the
window; delivered indices and timestamps stay those of the whole video.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np

from hmrflow.pipeline.config import DecodeConfig
from hmrflow.pipeline.errors import VideoDecodeError
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import ClipRef, FrameBatch
from hmrflow.pipeline.window import clip_window
from hmrflow.stages.video_probe import ProbeScan, _pick_video_stream, scan_video, ticks_to_seconds

log = logging.getLogger(__name__)

#: Interpolation used by both backends when resizing (decord/FFmpeg's default is bilinear too).
RESIZE_INTERPOLATION = "BILINEAR"
#: A decoded frame's pts matches a table entry if they differ by less than this (seconds).
_PTS_MATCH_S = 1e-6


# ------------------------------------------------------------------ selection
class SlotSelector:
    """Keep the first frame at or after each ``1/target_fps`` time slot.

    ``target_fps=None`` keeps every frame.  Slots are counted from t = 0 (the stream
    start), so the choice depends only on timestamps: the same for every backend, and
    correct for variable frame rates (a long gap simply skips slots).
    """

    #: Tolerance in slot units, so that 3 * (1/30) s counts as slot 1 at 10 fps.
    EPS = 1e-4

    def __init__(self, target_fps: float | None) -> None:
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {target_fps}")
        self.target_fps = target_fps
        self._last_slot = -math.inf

    def accept(self, t: float) -> bool:
        """Whether the frame at ``t`` seconds is kept (call in presentation order)."""
        if self.target_fps is None:
            return True
        slot = math.floor(t * self.target_fps + self.EPS)
        if slot > self._last_slot:
            self._last_slot = slot
            return True
        return False


def select_indices(
    pts_s: np.ndarray,
    target_fps: float | None,
    max_frames: int | None = None,
    first: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Indices (into ``pts_s``, shape (N,) float64 sorted seconds) of the frames to keep.

    Only frames ``first <= i < stop`` (the time window) are candidates; subsampling runs over
    them and ``max_frames`` counts from the first of them.
    """
    sel = SlotSelector(target_fps)
    stop = len(pts_s) if stop is None else min(stop, len(pts_s))
    keep = [i for i in range(first, stop) if sel.accept(float(pts_s[i]))]
    if max_frames is not None:
        keep = keep[:max_frames]
    return np.asarray(keep, np.int64)


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) after shrinking so the longer side is at most ``max_side`` (aspect kept).

    Never enlarges.  Both sides are rounded to the nearest integer, at least 1.
    """
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


# ----------------------------------------------------------------------- plan
@dataclass(frozen=True)
class DecodePlan:
    """Everything a backend needs to decode one clip the same way as the other backend.

    out_width/out_height: upright size of the delivered frames.
    pts_s: (N,) float64 table of all frame timestamps from the probe (ascending).
    first_idx/stop_idx: the time window as original frame indices, ``first_idx <= i < stop_idx``
        (None = to the last frame); frames outside it are never delivered.
    """

    path: str
    video_id: str
    rotation: int
    out_width: int
    out_height: int
    resize: bool
    pts_s: np.ndarray
    origin_ticks: int
    time_base: float
    batch_size: int
    target_fps: float | None
    max_frames: int | None
    threads: int
    allow_truncated: bool
    damage: str
    first_idx: int = 0
    stop_idx: int | None = None

    @property
    def stop(self) -> int:
        """End (exclusive) of the window as a frame index."""
        return len(self.pts_s) if self.stop_idx is None else self.stop_idx

    @property
    def stored_out_size(self) -> tuple[int, int]:
        """(width, height) of a frame before rotation, at the output scale."""
        if self.rotation in (90, 270):
            return self.out_height, self.out_width
        return self.out_width, self.out_height


def make_plan(clip: ClipRef, scan: ProbeScan, cfg: DecodeConfig) -> DecodePlan:
    """Combine a clip, its probe and the decode settings.

    The time window is the clip's own (a batch manifest's columns), its open sides taken
    from ``cfg.start``/``cfg.end``; it is resolved on the probe's timestamp table here, so a
    window outside the video fails with a one-line :class:`VideoDecodeError` before decoding.
    """
    info = scan.info
    ow, oh = output_size(info.upright_width, info.upright_height, cfg.max_side)
    first, stop = resolve_window(clip, scan, cfg)
    return DecodePlan(
        path=info.path,
        video_id=clip.video_id,
        rotation=info.rotation,
        out_width=ow,
        out_height=oh,
        resize=(ow, oh) != (info.upright_width, info.upright_height),
        pts_s=scan.pts_s,
        origin_ticks=scan.origin_ticks,
        time_base=scan.time_base,
        batch_size=cfg.batch_size,
        target_fps=cfg.target_fps,
        max_frames=cfg.max_frames,
        threads=cfg.threads,
        allow_truncated=cfg.allow_truncated,
        damage=info.damage,
        first_idx=first,
        stop_idx=stop,
    )


def resolve_window(clip: ClipRef, scan: ProbeScan, cfg: DecodeConfig) -> tuple[int, int | None]:
    """``(first_idx, stop_idx)`` of the clip's time window over the config's; ``(0, None)`` when none."""
    window = clip_window(clip).over(cfg.window)
    if not window.is_set:
        return 0, None
    info = scan.info
    window.check_fits(info.path, info.n_frames, info.duration_s, info.fps or info.measured_fps)
    first, stop = window.resolve(info.path, scan.pts_s)
    if window.end_beyond(info.n_frames, info.duration_s):
        log.warning("%s: end %s is after the video's last frame; decoding to the end", info.path, window.end)
    log.info("%s: time window %s = frames %d-%d", info.path, window, first, stop - 1)
    return first, stop


class BatchBuilder:
    """Fills one preallocated (batch_size, H, W, 3) uint8 array at a time."""

    def __init__(self, video_id: str, batch_size: int, height: int, width: int) -> None:
        self.video_id = video_id
        self.batch_size = batch_size
        self.shape = (height, width, 3)
        self._new()

    def _new(self) -> None:
        self.images = np.empty((self.batch_size,) + self.shape, np.uint8)
        self.idx: list[int] = []
        self.pts: list[float] = []

    def add(self, frame_idx: int, pts: float, image: np.ndarray) -> FrameBatch | None:
        """Append one (H, W, 3) frame; returns a full batch when one is complete."""
        self.images[len(self.idx)] = image
        self.idx.append(frame_idx)
        self.pts.append(pts)
        return self.flush() if len(self.idx) == self.batch_size else None

    def flush(self) -> FrameBatch | None:
        """The partial batch (None when empty)."""
        n = len(self.idx)
        if n == 0:
            return None
        batch = FrameBatch(
            video_id=self.video_id,
            frame_idx=np.asarray(self.idx, np.int64),
            pts=np.asarray(self.pts, np.float64),
            images=self.images[:n] if n < self.batch_size else self.images,
        )
        self._new()
        return batch


# ------------------------------------------------------------------- PyAV path
def _err_text(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__


class _AvReader:
    """PyAV demux + decode of one plan: yields ``(original index, seconds, frame)`` in order.

    With a time window it seeks to the keyframe at or before the window's first frame, so the
    frames before it that are decoded are only those the codec needs; when the demuxer cannot
    seek, or lands after the first frame, or cannot place the frames it lands on (no
    timestamps), it starts again from the beginning without seeking.  Damage is tallied for
    :meth:`finish`.
    """

    def __init__(self, plan: DecodePlan) -> None:
        self.plan = plan
        self.container: Any = None
        self._reset()

    def _reset(self) -> None:
        self.n_decoded = 0
        self.bad_packets = 0
        self.dropped = 0
        self.first_problem = ""

    def _open(self) -> tuple[Any, Any]:
        import av

        try:
            self.container = av.open(self.plan.path, mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(self.plan.path, f"cannot open: {_err_text(exc)}") from None
        stream = _pick_video_stream(self.container)
        if stream is None:
            raise VideoDecodeError(self.plan.path, "no video stream")
        ctx = stream.codec_context
        if self.plan.threads != 1:
            ctx.thread_type = "AUTO"
            ctx.thread_count = self.plan.threads
        return stream, ctx

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def frames(self) -> Iterator[tuple[int, float, Any]]:
        """Every decodable frame from the window's start (or the file's) to the end of the file."""
        import av

        seek = self.plan.first_idx > 0
        while True:
            stream, ctx = self._open()
            tb = self.plan.time_base or float(stream.time_base)
            if seek:
                target = self.plan.origin_ticks + int(round(float(self.plan.pts_s[self.plan.first_idx]) / tb))
                try:
                    self.container.seek(target, stream=stream, backward=True, any_frame=False)
                except av.error.FFmpegError as exc:
                    log.debug("%s: cannot seek (%s); decoding from the start", self.plan.path, _err_text(exc))
                    self.close()
                    seek = False
                    continue
            landed = not seek
            for idx, t, frame, timed in self._decode(stream, ctx, tb):
                if not landed:
                    if not timed or idx > self.plan.first_idx:
                        break  # overshot, or frames that cannot be placed: start again without seeking
                    landed = True
                yield idx, t, frame
            if landed:
                return
            log.debug("%s: seeking missed frame %d; decoding from the start", self.plan.path, self.plan.first_idx)
            self.close()
            self._reset()
            seek = False

    def _decode(self, stream: Any, ctx: Any, tb: float) -> Iterator[tuple[int, float, Any, bool]]:
        import av

        plan = self.plan
        table = plan.pts_s
        prev_idx = -1
        last_t = -1.0
        demux = self.container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self.first_problem = (
                    self.first_problem or f"read error after {self.n_decoded} frames ({_err_text(exc)})"
                )
                if not plan.allow_truncated:
                    raise VideoDecodeError(plan.path, self.first_problem) from None
                return
            try:
                frames = ctx.decode(packet)
            except av.error.FFmpegError as exc:
                self.bad_packets += 1
                problem = f"undecodable data near frame {self.n_decoded} ({_err_text(exc)})"
                self.first_problem = self.first_problem or problem
                if not plan.allow_truncated:
                    raise VideoDecodeError(plan.path, problem) from None
                continue
            for frame in frames:
                self.n_decoded += 1
                ticks = frame.pts if frame.pts is not None else frame.dts
                t_found = float(ticks_to_seconds(int(ticks), plan.origin_ticks, tb)) if ticks is not None else None
                idx = _table_index(table, t_found, prev_idx)
                if idx is None:
                    self.dropped += 1
                    problem = f"frame with timestamp {t_found:.4f} s out of order or unknown (damaged stream?)"
                    self.first_problem = self.first_problem or problem
                    if not plan.allow_truncated:
                        raise VideoDecodeError(plan.path, problem)
                    continue
                t = t_found if t_found is not None else last_t + 1.0 / 30.0
                last_t = t
                prev_idx = idx
                yield idx, t, frame, t_found is not None

    def finish(self) -> None:
        """Raise when nothing could be decoded; warn about damage met on the way."""
        plan = self.plan
        if self.n_decoded == 0:
            raise VideoDecodeError(plan.path, self.first_problem or "no frame could be decoded")
        if self.first_problem or self.bad_packets or self.dropped:
            log.warning(
                "%s: damaged video, delivered the %d readable frames "
                "(%d undecodable packets, %d out-of-order frames dropped; first problem: %s)",
                plan.path,
                self.n_decoded - self.dropped,
                self.bad_packets,
                self.dropped,
                self.first_problem or "?",
            )


def rgb_view(frame: Any, width: int, height: int) -> np.ndarray:
    """A decoded PyAV frame -> (height, width, 3) uint8 RGB, resized when its size differs.

    A view of the converted frame's buffer (no copy): the batch builder copies it once into
    its batch, where ``to_ndarray`` would first copy it into an array of its own.
    """
    if (frame.width, frame.height) == (width, height):
        rgb = frame.reformat(format="rgb24")
    else:
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation=RESIZE_INTERPOLATION)
    plane = rgb.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(rgb.height, plane.line_size)
    return rows[:, : rgb.width * 3].reshape(rgb.height, rgb.width, 3)


def iter_av_batches(plan: DecodePlan, after_idx: int = -1, already: int = 0) -> Iterator[FrameBatch]:
    """Decode ``plan`` with PyAV in this process.

    after_idx: deliver only frames whose original index is greater (to resume after another
        backend failed); selection still runs over all frames of the window so it matches.
    already: frames already delivered (counts toward ``max_frames``).

    Only the plan's time window is delivered: decoding starts at the keyframe before it
    (see :class:`_AvReader`) and stops at its end.  Damage (undecodable packets, read
    errors): with ``allow_truncated`` the readable frames are delivered and a warning is
    logged at the end; otherwise VideoDecodeError is raised at the first problem.
    """
    if plan.max_frames is not None and already >= plan.max_frames:
        return  # another backend delivered everything asked for
    reader = _AvReader(plan)
    try:
        sw, sh = plan.stored_out_size
        k_rot = -(plan.rotation // 90)
        selector = SlotSelector(plan.target_fps)
        builder = BatchBuilder(plan.video_id, plan.batch_size, plan.out_height, plan.out_width)
        delivered = already
        stop = plan.stop
        for idx, t, frame in reader.frames():
            if idx >= stop:
                break
            # frames before the window were decoded only because later ones depend on them
            if idx < plan.first_idx or not selector.accept(t) or idx <= after_idx:
                continue
            image = rgb_view(frame, sw, sh)
            if k_rot:
                image = np.rot90(image, k=k_rot)
            full = builder.add(idx, t, image)
            delivered += 1
            if full is not None:
                yield full
            if plan.max_frames is not None and delivered >= plan.max_frames:
                break
        tail = builder.flush()
        if tail is not None:
            yield tail
        reader.finish()
    finally:
        reader.close()


def _table_index(table: np.ndarray, t: float | None, prev_idx: int) -> int | None:
    """Original frame index of a frame at ``t`` seconds (its position in the probe's pts table).

    A frame without timestamp (``t`` None) gets ``prev_idx + 1``.  None means the frame
    must be dropped: its timestamp is not in the table or goes backwards (a damaged
    stream makes the decoder emit concealment frames out of order).
    """
    if t is None:
        return prev_idx + 1
    i = int(np.searchsorted(table, t - _PTS_MATCH_S))
    if i < len(table) and abs(float(table[i]) - t) <= _PTS_MATCH_S and i > prev_idx:
        return i
    return None


# ----------------------------------------------------------------------- stage
class DecodeStage(BaseStage[ClipRef, Iterator[FrameBatch]]):
    """``ClipRef -> Iterator[FrameBatch]``: upright RGB uint8 frames in batches.

    Each batch: frame_idx (F,) int64 original indices, pts (F,) float64 seconds,
    images (F, H, W, 3) uint8 with H, W the upright (possibly ``max_side``-shrunk) size.
    The probe runs when the stage is called, so bad files, and time windows that hold no
    frame of the file, raise :class:`VideoDecodeError` immediately; damage discovered while
    decoding raises from the iterator (or, with ``allow_truncated``, ends it early with a
    logged warning).  Only the window (the clip's ``start``/``end`` over ``decode.start``/
    ``decode.end``) is delivered, with the video's own indices and timestamps.
    """

    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, cfg: DecodeConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DecodeConfig()

    def probe(self, path: str) -> ProbeScan:
        """The probe this stage runs before decoding (max_pixels from the config)."""
        return scan_video(path, max_pixels=self.cfg.max_pixels)

    def __call__(self, clip: ClipRef) -> Iterator[FrameBatch]:
        scan = self.probe(clip.path)
        plan = make_plan(clip, scan, self.cfg)
        if plan.damage and not plan.allow_truncated:
            raise VideoDecodeError(plan.path, f"{plan.damage} (decode.allow_truncated is off)")
        backend = self._choose_backend(plan)
        if backend == "av":
            return iter_av_batches(plan)
        return self._iter_decord(plan, fallback=self.cfg.backend == "auto")

    # ------------------------------------------------------------- internals
    def _choose_backend(self, plan: DecodePlan) -> str:
        want = self.cfg.backend
        if want == "av":
            return "av"
        from hmrflow.stages.decode_decord import decord_available

        if not decord_available():
            if want == "decord":
                raise VideoDecodeError(plan.path, "backend 'decord' requested but decord is not installed")
            log.info("%s: decord not installed, decoding with av", plan.path)
            return "av"
        if plan.damage:
            log.warning("%s: %s; decord cannot read damaged files, decoding with av", plan.path, plan.damage)
            return "av"
        return "decord"

    def _iter_decord(self, plan: DecodePlan, fallback: bool) -> Iterator[FrameBatch]:
        from hmrflow.stages.decode_decord import DecordFailure, iter_decord_batches

        last_idx = -1
        delivered = 0
        try:
            for batch in iter_decord_batches(plan, timeout_s=self.cfg.decord_timeout_s):
                last_idx = int(batch.frame_idx[-1])
                delivered += len(batch)
                yield batch
        except DecordFailure as exc:
            if not fallback:
                raise VideoDecodeError(plan.path, f"decord failed: {exc}") from None
            log.warning("%s: decord failed (%s); continuing with av after frame %d", plan.path, exc, last_idx)
            yield from iter_av_batches(plan, after_idx=last_idx, already=delivered)


def decode_clip(clip: ClipRef, cfg: DecodeConfig | None = None) -> Iterator[FrameBatch]:
    """Convenience: ``DecodeStage(cfg)(clip)``."""
    return DecodeStage(cfg)(clip)
