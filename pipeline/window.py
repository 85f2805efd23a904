"""Time windows: process only part of a video (``--start/--end``, ``decode.start/end``, manifest columns).

A point in a video is written in seconds (``12.5`` or ``12.5s``) or as a frame number
(``300f``).  Seconds are the video's own clock (presentation time from the stream start,
the ``pts_s``/``pts`` of every output); frame numbers are original frame indices (the
``frame_idx`` of every output, counting every frame of the file from 0).

A window is half-open, like a Python ``range`` (and Pose2Sim's ``frame_range``): it holds
the frames with ``start <= t < end`` (or ``start <= frame_idx < end``), so trials cut as
``0s-10s`` and ``10s-20s`` share no frame.  Either side may be left open (``None``: from the
first frame / to the last).  ``decode.max_frames`` counts from the window's first frame.

Where a window comes from (the first that is set wins, per side):

1. the video's own ``start``/``end`` (a batch manifest's columns; carried on the
   :class:`~hmrflow.pipeline.types.ClipRef`),
2. ``decode.start``/``decode.end`` of the config (``--start/--end`` of ``run`` and ``batch``,
   ``start``/``end`` of a job spec).

The decode stage resolves the window on the probe's table of frame timestamps and decodes
only that part (PyAV seeks to the keyframe before the start); outputs keep the original
frame indices and timestamps.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional

import numpy as np

from hmrflow.pipeline.errors import ConfigError, VideoDecodeError
from hmrflow.pipeline.types import ClipRef

#: How the accepted forms are described in error messages.
FORMS = "seconds (12.5 or 12.5s) or a frame number (300f)"
#: A frame whose timestamp is within this of a window boundary counts as on it (float ticks).
EPS_S = 1e-6
#: ``12.5``, ``12.5s``, ``300f``, ``-3s`` (sign kept so that negatives get their own message).
_POINT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([sSfF]?)$")

Unit = Literal["s", "f"]


@dataclass(frozen=True)
class TimePoint:
    """One side of a window: ``value`` seconds (unit ``"s"``) or frame index (unit ``"f"``)."""

    value: float
    unit: Unit

    def __str__(self) -> str:
        if self.unit == "f":
            return f"{int(self.value)}f"
        return f"{self.value:.15g}s"

    def seconds(self, fps: float) -> float:
        """This point in seconds (frames converted at ``fps``; exact only for constant rates)."""
        return self.value if self.unit == "s" else self.value / fps


class TimePointError(ConfigError):
    """A time value that is not one of :data:`FORMS`; ``reason`` is the message without the value."""

    def __init__(self, what: str, value: Any, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{what} {value!r}: {reason}")


def parse_time_point(value: Any, what: str = "start") -> Optional[TimePoint]:
    """``12.5`` / ``"12.5"`` / ``"12.5s"`` -> seconds, ``"300f"`` -> frame 300; None or "" -> None.

    ``what`` names the value in the error (a flag, a key or a column).  Raises
    :class:`TimePointError` (a one-line :class:`ConfigError`) for bad syntax, negative values,
    NaN/infinity and fractional frame numbers.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # YAML's yes/no: never a time
        raise TimePointError(what, value, f"expected {FORMS}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        text = repr(float(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
    else:
        raise TimePointError(what, value, f"expected {FORMS}")
    m = _POINT.match(text)
    if m is None:
        reason = (
            "not a finite number" if text.lower().lstrip("+-") in ("nan", "inf", "infinity") else f"expected {FORMS}"
        )
        raise TimePointError(what, value, reason)
    number = float(m.group(1))
    unit: Unit = "f" if m.group(2).lower() == "f" else "s"
    if number < 0:
        raise TimePointError(what, value, "must not be negative (times count from the video's first frame)")
    if unit == "f" and number != int(number):
        raise TimePointError(what, value, "a frame number must be a whole number")
    return TimePoint(float(int(number)) if unit == "f" else number, unit)


def canonical(value: Any, what: str = "start") -> Optional[str]:
    """The canonical text of a time point (``"12.5s"``, ``"300f"``) or None; see :func:`parse_time_point`."""
    point = parse_time_point(value, what)
    return None if point is None else str(point)


@dataclass(frozen=True)
class Window:
    """A half-open window ``[start, end)`` of a video (see module docstring); None sides are open."""

    start: Optional[TimePoint] = None
    end: Optional[TimePoint] = None

    @classmethod
    def parse(cls, start: Any = None, end: Any = None, what: str = "") -> "Window":
        """Window from two user values; ``what`` prefixes the names in errors (``"--"``, ``"decode."``).

        Raises :class:`ConfigError` for bad values and for ``end <= start`` when both use the
        same unit (mixed units are checked against the video, see :meth:`check_fits`).
        """
        win = cls(parse_time_point(start, f"{what}start"), parse_time_point(end, f"{what}end"))
        win.check_order(what)
        return win

    @property
    def is_set(self) -> bool:
        """True when either side is given."""
        return self.start is not None or self.end is not None

    def over(self, fallback: "Window") -> "Window":
        """This window with its open sides taken from ``fallback`` (a per-video window over the config's)."""
        return Window(self.start or fallback.start, self.end or fallback.end)

    def check_order(self, what: str = "", fps: float = 0.0) -> None:
        """ConfigError when ``end <= start`` (mixed units compared only when ``fps`` is known)."""
        s, e = self.start, self.end
        if s is None or e is None:
            return
        if s.unit == e.unit:
            if e.value <= s.value:
                raise ConfigError(f"{what}end {e} must be after {what}start {s} (the window is [start, end))")
        elif fps > 0 and e.seconds(fps) <= s.seconds(fps):
            raise ConfigError(
                f"{what}end {e} must be after {what}start {s} (at {fps:g} fps: "
                f"{e.seconds(fps):.3f} s <= {s.seconds(fps):.3f} s)"
            )

    def record(self) -> dict[str, Optional[str]]:
        """JSON-able ``{"start": "12.5s" | None, "end": "300f" | None}`` (for manifests and tasks)."""
        return {
            "start": None if self.start is None else str(self.start),
            "end": None if self.end is None else str(self.end),
        }

    def __str__(self) -> str:
        return f"[{self.start or 'first frame'}, {self.end or 'last frame'})"

    def check_fits(self, path: str, n_frames: int, duration_s: float, fps: float) -> None:
        """Refuse, before any decoding, a window that starts after the video ends or is empty.

        Uses the probe's facts (frame count, duration, nominal rate); unknown facts (<= 0) are
        not checked.  Raises :class:`VideoDecodeError` naming ``path``.
        """
        try:
            self.check_order(fps=fps)
        except ConfigError as exc:
            raise VideoDecodeError(path, f"time window: {exc}") from None
        s = self.start
        if s is None:
            return
        if s.unit == "f" and n_frames > 0 and s.value >= n_frames:
            raise VideoDecodeError(
                path, f"start {s} is beyond the video's last frame (it has {n_frames} frames, 0-{n_frames - 1})"
            )
        if s.unit == "s" and duration_s > 0 and s.value >= duration_s:
            raise VideoDecodeError(path, f"start {s} is beyond the video's duration ({duration_s:.3f} s)")

    def resolve(self, path: str, pts_s: np.ndarray) -> tuple[int, int]:
        """``(first, stop)``: the window as indices ``first <= frame_idx < stop`` into ``pts_s``.

        pts_s: (N,) float64 sorted timestamps of every frame (the probe's table; a frame's
        index there is its original frame index).  ``stop`` is clamped to N.  Raises
        :class:`VideoDecodeError` naming ``path`` when the window holds no frame.
        """
        n = len(pts_s)
        first, stop = 0, n
        if self.start is not None:
            first = frame_index(self.start, pts_s)
        if self.end is not None:
            stop = min(n, frame_index(self.end, pts_s))
        if first >= n:
            last = f"frame {n - 1} at {float(pts_s[-1]):.3f} s" if n else "no frames"
            raise VideoDecodeError(path, f"start {self.start} is beyond the video's last frame ({last})")
        if stop <= first:
            raise VideoDecodeError(path, f"the time window {self} holds no frame")
        return first, stop

    def end_beyond(self, n_frames: int, duration_s: float) -> bool:
        """True when ``end`` lies after the video's end (the window is then cut at the last frame)."""
        e = self.end
        if e is None:
            return False
        if e.unit == "f":
            return n_frames > 0 and e.value > n_frames
        return duration_s > 0 and e.value > duration_s + EPS_S


def frame_index(point: TimePoint, pts_s: np.ndarray) -> int:
    """Index of the first frame at or after ``point`` in the sorted timestamps ``pts_s`` (may be N)."""
    if point.unit == "f":
        return int(point.value)
    # a frame a float-rounding step before the point counts as on it
    return int(np.searchsorted(pts_s, point.value - EPS_S, side="left"))


def window_of(start: Any = None, end: Any = None) -> Window:
    """:meth:`Window.parse` without the order check (values already validated where they came from)."""
    return Window(parse_time_point(start), parse_time_point(end))


def task_window(extra: Mapping[str, Any] | None) -> Window:
    """The window a batch task carries in ``extra["window"]`` (``{"start", "end"}``), or an open one."""
    rec = (extra or {}).get("window") or {}
    return window_of(rec.get("start"), rec.get("end"))


def clip_window(clip: ClipRef) -> Window:
    """The per-video window a :class:`ClipRef` carries (open when it carries none)."""
    return window_of(clip.start, clip.end)


def with_task_window(clip: ClipRef, extra: Mapping[str, Any] | None) -> ClipRef:
    """``clip`` with the window of its batch task (``extra["window"]``), for the decode stage.

    Every runner calls this right after the probe: the probe knows the file, the task knows
    which part of it was asked for.
    """
    win = task_window(extra)
    if not win.is_set:
        return clip
    rec = win.record()
    return dataclasses.replace(clip, start=rec["start"], end=rec["end"])
