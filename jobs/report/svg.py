"""Tiny SVG plotting (no JavaScript, no external files): line plots and a track timeline."""

from __future__ import annotations

import math
from html import escape
from typing import Mapping, Sequence

import numpy as np


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [round(start + k * step, 10) for k in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


def _finite_range(v: np.ndarray, default: tuple[float, float]) -> tuple[float, float]:
    """(min, max) of the finite values of ``v`` (``default`` when there are none); never NaN."""
    f = v[np.isfinite(v)]
    return (float(f.min()), float(f.max())) if f.size else default


def line_plot(
    x: np.ndarray,
    series: Mapping[str, np.ndarray],
    colors: Mapping[str, str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 640,
    height: int = 240,
    css_class: str = "plot",
    dashed: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    x_range: tuple[float, float] | None = None,
    empty_text: str = "no data",
    shade: Sequence[tuple[float, float]] = (),
    shade_label: str = "",
) -> str:
    """An inline ``<svg>`` line plot of ``series`` (name -> (N,) values) over ``x`` (N,).

    A non-finite value in ``x`` or a series is a gap: each run of finite points is its own
    ``<polyline class="series" data-name=NAME>`` (a lone point is a ``<circle>``), so no
    line is drawn across it and no NaN reaches the SVG.  ``labels``: legend text per name
    (default the name); ``x_range``: the x axis limits (default the finite range of ``x``);
    ``empty_text`` is written in the plot when no point is finite; ``shade``: (x_start,
    x_stop) spans drawn as grey bands behind the curves (``<rect class="shade">``), named
    ``shade_label`` in the legend.
    """
    ml, mr, mt, mb = 52, 130, 24 if title else 10, 34
    pw, ph = width - ml - mr, height - mt - mb
    x = np.asarray(x, np.float64)
    ys = [np.asarray(v, np.float64) for v in series.values()]
    x0, x1 = x_range if x_range is not None else _finite_range(x, (0.0, 1.0))
    if not (np.isfinite(x0) and np.isfinite(x1)):
        x0, x1 = 0.0, 1.0
    if x1 <= x0:
        x1 = x0 + 1.0
    in_x = np.isfinite(x) & (x >= x0) & (x <= x1)
    y0, y1 = _finite_range(np.concatenate([y[in_x] for y in ys]) if ys else np.zeros(0), (0.0, 1.0))
    pad = 0.05 * (y1 - y0) if y1 > y0 else 1.0
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda v: ml + (v - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda v: mt + (1 - (v - y0) / (y1 - y0)) * ph  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(css_class)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>',
    ]
    if title:
        out.append(f'<text x="{ml}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>')
    for a, b in shade:
        a, b = max(float(a), x0), min(float(b), x1)
        if np.isfinite(a) and np.isfinite(b) and b > a:
            out.append(
                f'<rect class="shade" x="{sx(a):.1f}" y="{mt}" width="{max(sx(b) - sx(a), 1.0):.1f}" height="{ph}" '
                'fill="#e6e6e6"/>'
            )
    for t in nice_ticks(y0, y1):
        yy = sy(t)
        out.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{ml - 4}" y="{yy + 4:.1f}" font-size="10" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in nice_ticks(x0, x1):
        xx = sx(t)
        out.append(
            f'<line class="xtick" x1="{xx:.1f}" x2="{xx:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#666"/>'
            f'<text x="{xx:.1f}" y="{mt + ph + 15}" font-size="10" text-anchor="middle">{_fmt(t)}</text>'
        )
    if xlabel:
        out.append(
            f'<text x="{ml + pw / 2:.0f}" y="{height - 4}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>'
        )
    if ylabel:
        out.append(
            f'<text x="12" y="{mt + ph / 2:.0f}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {mt + ph / 2:.0f})">{escape(ylabel)}</text>'
        )
    drawn = 0
    for k, (name, y) in enumerate(zip(series, ys)):
        col = colors.get(name, "#333")
        dash = ' stroke-dasharray="5 3"' if name in dashed else ""
        ok = np.isfinite(y) & in_x
        for a, b in runs(ok):
            drawn += 1
            if b - a == 1:  # a lone point: a polyline of one point paints nothing
                out.append(
                    f'<circle class="series" data-name="{escape(name)}" cx="{sx(x[a]):.1f}" cy="{sy(y[a]):.1f}" '
                    f'r="2" fill="{col}"/>'
                )
                continue
            pts = " ".join(f"{sx(x[i]):.1f},{sy(y[i]):.1f}" for i in range(a, b))
            out.append(
                f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{col}" '
                f'stroke-width="1.6"{dash} points="{pts}"/>'
            )
        ly = mt + 12 + 16 * k
        label = (labels or {}).get(name, name)
        out.append(
            f'<g class="legend"><line x1="{ml + pw + 10}" x2="{ml + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{col}" stroke-width="2"{dash}/><text x="{ml + pw + 32}" y="{ly}" font-size="11">'
            f"{escape(label)}</text></g>"
        )
    if shade and shade_label:
        ly = mt + 12 + 16 * len(series)
        out.append(
            f'<g class="legend"><rect x="{ml + pw + 10}" y="{ly - 9}" width="18" height="10" fill="#e6e6e6"/>'
            f'<text x="{ml + pw + 32}" y="{ly}" font-size="11">{escape(shade_label)}</text></g>'
        )
    if not drawn:
        out.append(
            f'<text class="empty" x="{ml + pw / 2:.0f}" y="{mt + ph / 2:.0f}" font-size="12" fill="#777" '
            f'text-anchor="middle">{escape(empty_text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the True runs of a boolean array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def timeline(
    rows: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    frame_range: tuple[int, int],
    *,
    width: int = 900,
    row_h: int = 18,
    title: str = "Track timeline",
    fps: float | None = None,
) -> str:
    """Inline ``<svg>``: one row per track, observed frames solid, filled frames light/striped,
    frames without a row left empty.

    rows: (label, colour, frame_idx (T,), observed (T,) bool) per track.
    frame_range: (first, last) frame of the axis.  fps: when given, the axis is labelled in
    seconds (frame / fps), else in frames.
    """
    ml, mr, mt, mb = 70, 20, 24, 30
    f0, f1 = frame_range
    f1 = max(f1, f0 + 1)
    pw = width - ml - mr
    height = mt + mb + row_h * max(len(rows), 1)
    sx = lambda f: ml + (f - f0) / (f1 + 1 - f0) * pw  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        '<defs><pattern id="filled" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ddd"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="2"/></pattern></defs>',
        f'<text x="{ml}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for k, (label, col, fidx, obs) in enumerate(rows):
        y = mt + k * row_h
        out.append(f'<text x="{ml - 6}" y="{y + row_h - 5}" font-size="11" text-anchor="end">{escape(label)}</text>')
        fidx = np.asarray(fidx, np.int64)
        obs = np.asarray(obs, bool)
        # a run is consecutive frames with the same observed flag
        if fidx.size:
            brk = np.nonzero((np.diff(fidx) != 1) | (np.diff(obs.astype(np.int8)) != 0))[0] + 1
            for seg in np.split(np.arange(fidx.size), brk):
                a, b = int(fidx[seg[0]]), int(fidx[seg[-1]]) + 1
                fill = col if obs[seg[0]] else "url(#filled)"
                cls = "observed" if obs[seg[0]] else "filled"
                out.append(
                    f'<rect class="{cls}" x="{sx(a):.1f}" y="{y + 2}" width="{max(sx(b) - sx(a), 0.8):.1f}" '
                    f'height="{row_h - 4}" fill="{fill}"><title>{escape(label)}: frames {a}-{b - 1} {cls}</title></rect>'
                )
    yb = mt + row_h * max(len(rows), 1)
    seconds = fps is not None and np.isfinite(fps) and fps > 0
    scale = float(fps) if seconds and fps is not None else 1.0
    for t in nice_ticks(f0 / scale, f1 / scale):
        # frame f covers [f, f + 1) on the axis: time t is frame t * fps
        xx = sx(t * scale)
        out.append(
            f'<line class="xtick" x1="{xx:.1f}" x2="{xx:.1f}" y1="{yb}" y2="{yb + 4}" stroke="#666"/>'
            f'<text x="{xx:.1f}" y="{yb + 15}" font-size="10" text-anchor="middle">{_fmt(t)}</text>'
        )
    unit = "time (s)" if seconds else "frame"
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 3}" font-size="11" text-anchor="middle">{unit}</text></svg>')
    return "".join(out)


def top_view(
    paths: Sequence[tuple[str, str, np.ndarray]],
    *,
    width: int = 420,
    height: int = 420,
    css_class: str = "topview",
) -> str:
    """Ground-plane trajectories seen from above, equal scale on both axes, metres.

    paths: (label, CSS colour, (T, 2) points (world x, world z)); non-finite points break a
    path.  The first camera stands at the origin looking up the page (+z); a circle marks
    where each path starts.
    """
    pts = [p[np.isfinite(p).all(axis=1)] for _, _, p in paths]
    allp = np.concatenate([p for p in pts if len(p)] + [np.zeros((1, 2))])
    lo, hi = allp.min(0) - 0.5, allp.max(0) + 0.5
    span = float(max(hi - lo))
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2, mid + span / 2
    pad = 40
    s = (min(width, height) - 2 * pad) / span

    def xy(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # world x points to the camera's left, so it is drawn right-to-left: the view matches the image
        return pad + (hi[0] - p[..., 0]) * s, height - pad - (p[..., 1] - lo[1]) * s

    out = [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>top view of the trajectories (world frame, metres)</title>',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>',
    ]
    for t in nice_ticks(float(lo[0]), float(hi[0])):
        x, _ = xy(np.array([t, lo[1]]))
        out.append(f'<text x="{x:.1f}" y="{height - pad + 14}" font-size="10" text-anchor="middle">{_fmt(t)}</text>')
    for t in nice_ticks(float(lo[1]), float(hi[1])):
        _, y = xy(np.array([hi[0], t]))
        out.append(f'<text x="{pad - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{_fmt(t)}</text>')
    out.append(
        f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">x (m; +x is the camera&#39;s left)</text>'
    )
    out.append(
        f'<text x="12" y="{height / 2}" font-size="11" transform="rotate(-90 12 {height / 2})" text-anchor="middle">z (m, away from the camera)</text>'
    )
    cx, cy = xy(np.zeros(2))
    out.append(
        f'<path d="M{cx:.1f},{cy - 8:.1f} L{cx - 6:.1f},{cy + 6:.1f} L{cx + 6:.1f},{cy + 6:.1f} Z" fill="#444"><title>camera (first frame)</title></path>'
    )
    for (label, color, p), _ in zip(paths, pts):
        ok = np.isfinite(p).all(axis=1)
        for a, b in runs(ok):
            x, y = xy(p[a:b])
            coords = " ".join(f"{u:.1f},{v:.1f}" for u, v in zip(x, y))
            out.append(
                f'<polyline class="path" fill="none" stroke="{color}" stroke-width="2" points="{coords}"><title>{escape(label)}</title></polyline>'
            )
        if ok.any():
            x, y = xy(p[np.argmax(ok)])
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    out.append("</svg>")
    return "".join(out)
