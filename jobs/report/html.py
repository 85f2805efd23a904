"""Self-contained QC report of one output folder: ``report.html`` (inline SVG, no scripts,
no network) and ``report.png`` (a Pillow-drawn summary).

Contents per video: a summary table, the track timeline (observed frames solid in the
track's colour, frames filled by refinement striped grey), and per track: a skeleton
thumbnail at the middle frame, plots of the main joint angles over time
(:data:`hmrflow.jobs.export.angles.MAIN_ANGLES`, degrees vs seconds) and its jitter
(mean jerk of the 24 joints, m/s^3, :func:`hmrflow.priors.metrics.jitter`).
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from hmrflow.jobs.export.angles import MAIN_ANGLES, joint_angles
from hmrflow.jobs.export.reading import TrackData, VideoOutput, load_video_output
from hmrflow.jobs.report import svg
from hmrflow.jobs.report.colors import hex_color, track_color
from hmrflow.jobs.report.skeleton_draw import data_uri, skeleton_thumbnail

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
PNG_NAME = "report.png"
#: Colours of the angle curves (left solid, right dashed, one colour per joint).
_ANGLE_COLORS = {"hip": "#1f77b4", "knee": "#d62728", "elbow": "#2ca02c", "ankle": "#9467bd", "shoulder": "#ff7f0e"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0} .swatch{display:inline-block;width:12px;height:12px;border:1px solid #555;vertical-align:middle}
.track{display:flex;gap:16px;align-items:flex-start;margin:10px 0} .meta{font-size:12px;color:#555}
img.thumb{border:1px solid #ccc}
"""


@dataclass(frozen=True)
class TrackSummary:
    """Numbers shown for one track."""

    track_id: int
    n_frames: int
    n_observed: int
    first_frame: int
    last_frame: int
    duration_s: float
    jitter_m_s3: float
    mean_confidence: float


def track_joints(track: TrackData, body_model: Any) -> np.ndarray:
    """(T, 24, 3) camera-frame joints of a track (metres)."""
    from hmrflow.jobs.export.positions import track_positions

    return track_positions(track, body_model, "joints")


def summarize(track: TrackData, joints: np.ndarray) -> TrackSummary:
    """Counts, duration, jitter and mean confidence of one track."""
    from hmrflow.priors.metrics import jitter

    jit = jitter(joints, track.frame_idx, fps=track.frame_rate)
    return TrackSummary(
        track_id=track.track_id,
        n_frames=len(track),
        n_observed=int(track.observed.sum()),
        first_frame=int(track.frame_idx[0]),
        last_frame=int(track.frame_idx[-1]),
        duration_s=float(track.pts[-1] - track.pts[0]),
        jitter_m_s3=float(jit.mean()) if jit.size else float("nan"),
        mean_confidence=float(np.mean(track.confidence)),
    )


def _angle_plot(track: TrackData, angles: dict[str, np.ndarray]) -> str:
    # gaps where frames are missing: insert NaN rows between non-consecutive frames
    x, ser = track.pts.astype(np.float64), {n: angles[n] for n in MAIN_ANGLES}
    gaps = np.nonzero(np.diff(track.frame_idx) > 1)[0] + 1
    if gaps.size:
        x = np.insert(x, gaps, np.nan)
        ser = {n: np.insert(v, gaps, np.nan) for n, v in ser.items()}
    colors = {n: _ANGLE_COLORS[n.split("_")[0]] for n in MAIN_ANGLES}
    return svg.line_plot(
        x,
        ser,
        colors,
        title=f"Track {track.track_id}: joint angles",
        xlabel="time (s)",
        ylabel="degrees",
        css_class="plot angles",
        dashed=[n for n in MAIN_ANGLES if n.endswith("_r")],
    )


def _top_view(tracks: list[TrackData]) -> list[str]:
    """The "Top view" section: every track's ground path in the world frame (empty without one)."""
    paths = [
        (f"track {t.track_id}", hex_color(track_color(t.track_id)), np.asarray(t.world_transl, np.float64)[:, [0, 2]])
        for t in tracks
        if t.world_transl is not None and np.isfinite(t.world_transl).any()
    ]
    if not paths:
        return []
    return [
        "<h2>Top view (world frame)</h2>",
        svg.top_view(paths),
        '<p class="meta">ground paths of the tracks seen from above (SMPL translation, metres); the triangle is the '
        "first frame's camera looking up the page, a dot marks where a track starts (docs/world.md).</p>",
    ]


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if not np.isfinite(v) else f"{v:.{digits}f}"


def render_html(
    video: VideoOutput, summaries: list[TrackSummary], plots: dict[int, str], thumbs: dict[int, str]
) -> str:
    """The report page (a complete HTML document, UTF-8, no external resources)."""
    tracks = [t for t in video.tracks if len(t)]
    inp = video.manifest.get("input", {}) if isinstance(video.manifest.get("input"), dict) else {}
    f0 = min((int(t.frame_idx[0]) for t in tracks), default=0)
    f1 = max((int(t.frame_idx[-1]) for t in tracks), default=1)
    n_frames = inp.get("n_frames")
    if isinstance(n_frames, int) and n_frames > 0:
        f0, f1 = 0, max(f1, n_frames - 1)
    rows = [(f"track {t.track_id}", hex_color(track_color(t.track_id)), t.frame_idx, t.observed) for t in tracks]
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hmrflow QC: {escape(video.video_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hmrflow QC report: {escape(video.video_id)}</h1>",
        f'<p class="meta">input: {escape(str(inp.get("path", "?")))} &middot; {escape(str(inp.get("width", "?")))}x'
        f"{escape(str(inp.get('height', '?')))} &middot; {escape(str(inp.get('fps', '?')))} fps &middot; "
        f"{len(tracks)} track(s) &middot; generated {_dt.datetime.now().isoformat(timespec='seconds')}</p>",
    ]
    table = [
        "<h2>Tracks</h2><table><tr><th>track</th><th>frames</th><th>observed</th><th>filled</th>"
        "<th>first&ndash;last frame</th><th>duration (s)</th><th>jitter (m/s&sup3;)</th><th>mean confidence</th></tr>"
    ]
    for s in summaries:
        col = hex_color(track_color(s.track_id))
        table.append(
            f'<tr><td><span class="swatch" style="background:{col}"></span> <a href="#track-{s.track_id}">{s.track_id}</a></td>'
            f"<td>{s.n_frames}</td><td>{s.n_observed} ({100 * s.n_observed / max(s.n_frames, 1):.0f}%)</td>"
            f"<td>{s.n_frames - s.n_observed}</td><td>{s.first_frame}&ndash;{s.last_frame}</td>"
            f"<td>{_fmt(s.duration_s)}</td><td>{_fmt(s.jitter_m_s3, 1)}</td><td>{_fmt(s.mean_confidence)}</td></tr>"
        )
    table.append("</table>")
    if not tracks:
        table = ["<h2>Tracks</h2><p>No tracks in this output.</p>"]
    body = [
        *head,
        *table,
        "<h2>Timeline</h2>",
        svg.timeline(rows, (f0, f1)) if rows else "",
        '<p class="meta">solid: observed (person detected); striped: filled by refinement.</p>',
        *_top_view(tracks),
        "<h2>Per track</h2>",
    ]
    for s in summaries:
        body.append(
            f'<section class="track" id="track-{s.track_id}">'
            f'<img class="thumb" alt="track {s.track_id} pose" src="{thumbs[s.track_id]}" width="120" height="160">'
            f'<div>{plots[s.track_id]}<div class="meta">jitter {_fmt(s.jitter_m_s3, 1)} m/s&sup3; &middot; '
            "left solid, right dashed; angle definitions: docs/exports.md</div></div></section>"
        )
    body.append("</body></html>")
    return "\n".join(body)


def render_png(
    video: VideoOutput, summaries: list[TrackSummary], angles: dict[int, dict[str, np.ndarray]], width: int = 900
) -> "Any":
    """A PIL image: title, timeline bars and per-track knee flexion curves."""
    from PIL import Image, ImageDraw

    tracks = [t for t in video.tracks if len(t)]
    row_h, plot_h = 16, 90
    height = 40 + row_h * max(len(tracks), 1) + 20 + (plot_h + 24) * len(tracks)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), f"hmrflow QC: {video.video_id}  ({len(tracks)} tracks)", fill="black")
    f0 = min((int(t.frame_idx[0]) for t in tracks), default=0)
    f1 = max((int(t.frame_idx[-1]) for t in tracks), default=1) + 1
    ml, pw = 80, width - 100
    sx = lambda f: ml + (f - f0) / max(f1 - f0, 1) * pw  # noqa: E731
    for k, t in enumerate(tracks):
        y = 36 + k * row_h
        col = track_color(t.track_id)
        d.text((10, y), f"track {t.track_id}", fill="black")
        for i, f in enumerate(t.frame_idx):
            d.rectangle([sx(f), y + 2, sx(f + 1), y + row_h - 3], fill=col if t.observed[i] else (200, 200, 200))
    y = 40 + row_h * max(len(tracks), 1) + 20
    for t in tracks:
        a = angles[t.track_id]
        d.text((10, y), f"track {t.track_id} knee flexion (deg)", fill="black")
        top, bot = y + 14, y + 14 + plot_h
        d.rectangle([ml, top, ml + pw, bot], outline=(150, 150, 150))
        vals = np.concatenate([a["knee_flexion_l"], a["knee_flexion_r"]])
        lo, hi = float(vals.min()), float(vals.max())
        hi = hi if hi > lo else lo + 1.0
        d.text((ml - 40, top), f"{hi:.0f}", fill="black")
        d.text((ml - 40, bot - 10), f"{lo:.0f}", fill="black")
        for name, col in (("knee_flexion_l", (214, 39, 40)), ("knee_flexion_r", (31, 119, 180))):
            pts = [(sx(f + 0.5), bot - (v - lo) / (hi - lo) * plot_h) for f, v in zip(t.frame_idx, a[name])]
            if len(pts) > 1:
                d.line(pts, fill=col, width=2)
        y = bot + 10
    return img


def build_report(video_dir: str | Path, body_model: Any = None, dest: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.png`` for ``OUT/<video_id>/`` into ``dest`` (default: that folder).

    ``body_model``: for joint positions (jitter, thumbnails); default the synthetic body.
    Returns the two paths.
    """
    if body_model is None:
        from hmrflow.priors.body_model import load_body_model

        body_model = load_body_model("synthetic")
    video = load_video_output(video_dir)
    folder = Path(dest) if dest is not None else video.path
    folder.mkdir(parents=True, exist_ok=True)
    summaries, plots, thumbs, all_angles = [], {}, {}, {}
    for t in video.tracks:
        if len(t) == 0:
            continue
        joints = track_joints(t, body_model)
        ang = joint_angles(t.rotmats())
        all_angles[t.track_id] = ang
        summaries.append(summarize(t, joints))
        plots[t.track_id] = _angle_plot(t, ang)
        thumbs[t.track_id] = data_uri(skeleton_thumbnail(joints[len(t) // 2], track_color(t.track_id)))
    html_path = folder / HTML_NAME
    html_path.write_text(render_html(video, summaries, plots, thumbs), encoding="utf-8")
    png_path = folder / PNG_NAME
    render_png(video, summaries, all_angles).save(png_path)
    log.info("%s: report %s", video.video_id, html_path)
    return html_path, png_path
