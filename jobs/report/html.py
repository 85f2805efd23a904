"""Self-contained QC report of one output folder: ``report.html`` (inline SVG, no scripts,
no network) and ``report.png`` (a Pillow-drawn summary), written for a clinician.

Per video: a table with one line per track (its quality verdict in plain words, how much of
it was seen, its longest gap, confidence and walking figures), a "how to read this report"
note with the thresholds, the track timeline in seconds, the top view (world frame), and per
track: a skeleton thumbnail, the quality list (:mod:`hmrflow.jobs.report.quality`), the gait
figures when the person walks (:mod:`hmrflow.jobs.report.gait`), a plot of the main joint
angles (:data:`hmrflow.jobs.export.angles.MAIN_ANGLES`, degrees vs seconds, gaps left open,
frames filled by the refiner shaded) and, folded away, technical details (frame numbers,
jitter).  The PNG has the timeline and hip/knee flexion per track, each with a time axis in
seconds and a legend, and the verdict and gait line of each track.

Every track of the output appears, including ones with no usable pose; no non-finite number
is ever written into the SVG or drawn into the PNG.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hmrflow.jobs.export.angles import MAIN_ANGLES, joint_angles
from hmrflow.jobs.export.reading import TrackData, VideoOutput, load_video_output
from hmrflow.jobs.report import gait as gait_mod
from hmrflow.jobs.report import quality as q
from hmrflow.jobs.report import svg
from hmrflow.jobs.report.colors import hex_color, track_color
from hmrflow.jobs.report.gait import Gait
from hmrflow.jobs.report.quality import TrackQuality, track_quality
from hmrflow.jobs.report.skeleton_draw import data_uri, skeleton_thumbnail

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
PNG_NAME = "report.png"
#: Colours of the angle curves (left solid, right dashed, one colour per joint).
_ANGLE_COLORS = {"hip": "#1f77b4", "knee": "#d62728", "elbow": "#2ca02c", "ankle": "#9467bd", "shoulder": "#ff7f0e"}
#: The PNG's curves: (angle, legend text, RGB).  Pillow draws no dashes, so right is lighter;
#: none of these can equal a track colour (those have a largest component of 242).
PNG_SERIES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("hip_flexion_l", "left hip", (31, 119, 180)),
    ("hip_flexion_r", "right hip", (158, 202, 225)),
    ("knee_flexion_l", "left knee", (214, 39, 40)),
    ("knee_flexion_r", "right knee", (252, 146, 114)),
)
#: PNG layout: width, left margin (labels), right margin; the plots and the timeline share
#: the x axis ``[PNG_LEFT, width - PNG_RIGHT]``.
PNG_WIDTH, PNG_LEFT, PNG_RIGHT = 900, 80, 20
#: Colour of the PNG's axis lines and ticks (bluish: anti-aliased black text is pure grey).
PNG_AXIS = (70, 70, 110)

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc} h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0} td.verdict{text-align:left} .swatch{display:inline-block;width:12px;height:12px;border:1px solid #555;vertical-align:middle}
.track{display:flex;gap:16px;align-items:flex-start;margin:6px 0} .meta{font-size:12px;color:#555}
img.thumb{border:1px solid #ccc} .nothumb{width:120px;height:160px;border:1px solid #ccc;color:#777;font-size:12px;display:flex;align-items:center;justify-content:center}
ul.quality{margin:4px 0;padding-left:18px;font-size:14px} p.gait{font-size:14px;margin:6px 0}
.v-good{color:#1a7f37;font-weight:bold} .v-care{color:#9a6700;font-weight:bold} .v-poor{color:#cf222e;font-weight:bold}
details{font-size:12px;color:#555;margin:4px 0}
"""


@dataclass(frozen=True)
class TrackReport:
    """Everything the report shows of one track.

    angles: name -> (T,) degrees (:data:`MAIN_ANGLES`); jitter_m_s3: mean jerk of the 24
    joints (NaN when it cannot be computed); thumb: ``data:`` URI of the skeleton thumbnail,
    "" when no frame has a finite pose.
    """

    track: TrackData
    quality: TrackQuality
    gait: Gait
    angles: dict[str, np.ndarray]
    jitter_m_s3: float
    thumb: str


def track_joints(track: TrackData, body_model: Any) -> np.ndarray:
    """(T, 24, 3) camera-frame joints of a track (metres)."""
    from hmrflow.jobs.export.positions import track_positions

    return track_positions(track, body_model, "joints")


def video_fps(video: VideoOutput) -> float | None:
    """The input's frame rate from the manifest (None when absent or not a positive number)."""
    inp = video.manifest.get("input")
    fps = inp.get("fps") if isinstance(inp, dict) else None
    return float(fps) if isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0 else None


def _joins(video: VideoOutput) -> dict[int, list[Any]]:
    """track id -> its ``joins`` list from the manifest (tracker re-identifications)."""
    out: dict[int, list[Any]] = {}
    for rec in video.manifest.get("tracks") or []:
        if isinstance(rec, dict) and isinstance(rec.get("track_id"), int) and isinstance(rec.get("joins"), list):
            out[rec["track_id"]] = rec["joins"]
    return out


def analyse_track(
    track: TrackData, body_model: Any, fps: float | None = None, joins: Sequence[Any] = ()
) -> TrackReport:
    """Quality, gait, angles, jitter and thumbnail of one track (any length, NaN poses allowed)."""
    from hmrflow.priors.metrics import jitter

    quality = track_quality(track, fps, joins)
    if len(track) == 0:
        empty = {n: np.zeros(0) for n in MAIN_ANGLES}
        return TrackReport(track, quality, Gait(False, "camera"), empty, float("nan"), "")
    # angles and joints of the rows with a finite pose only (NaN elsewhere): scipy's Euler
    # decomposition fails on NaN matrices
    fin = np.isfinite(track.poses).all(axis=1) & np.isfinite(track.transl).all(axis=1)
    ang = {n: np.full(len(track), np.nan) for n in MAIN_ANGLES}
    joints = np.full((len(track), 24, 3), np.nan)
    if fin.any():
        sub = _rows(track, fin)
        sub_ang = joint_angles(sub.rotmats())
        for n in MAIN_ANGLES:
            ang[n][fin] = sub_ang[n]
        joints[fin] = track_joints(sub, body_model)
    ok = np.isfinite(joints).all(axis=(1, 2))
    jit = jitter(joints[ok], track.frame_idx[ok], fps=track.frame_rate)
    jit = jit[np.isfinite(jit)]
    thumb = ""
    if ok.any():
        # the seen frame nearest the middle, else any frame with a pose
        cand = np.nonzero(ok & track.observed)[0] if (ok & track.observed).any() else np.nonzero(ok)[0]
        mid = int(cand[np.argmin(np.abs(cand - len(track) // 2))])
        thumb = data_uri(skeleton_thumbnail(joints[mid], track_color(track.track_id)))
    try:
        g = (
            gait_mod.gait_of_track(track, body_model, camera_joints=joints)
            if fin.all()
            else _gait_rows(track, fin, body_model)
        )
    except Exception:  # a report is still useful without gait figures; say why in the log
        log.warning("track %d: gait figures failed", track.track_id, exc_info=True)
        g = Gait(False, "world" if track.has_world else "camera", note="gait figures could not be computed")
    return TrackReport(
        track, quality, g, {n: ang[n] for n in MAIN_ANGLES}, float(jit.mean()) if jit.size else float("nan"), thumb
    )


def _rows(track: TrackData, mask: np.ndarray) -> TrackData:
    """The rows of ``track`` where (T,) ``mask`` is True."""
    import dataclasses

    w_or = None if track.world_orient is None else track.world_orient[mask]
    w_tr = None if track.world_transl is None else track.world_transl[mask]
    return dataclasses.replace(
        track,
        frame_idx=track.frame_idx[mask],
        pts=track.pts[mask],
        poses=track.poses[mask],
        transl=track.transl[mask],
        observed=track.observed[mask],
        confidence=track.confidence[mask],
        world_orient=w_or,
        world_transl=w_tr,
    )


def _gait_rows(track: TrackData, fin: np.ndarray, body_model: Any) -> Gait:
    """Gait of the rows with a finite pose (rows without one are gaps: bouts never span them)."""
    if not fin.any():
        return Gait(False, "world" if track.has_world else "camera")
    return gait_mod.gait_of_track(_rows(track, fin), body_model)


def time_range(video: VideoOutput) -> tuple[float, float]:
    """(start, end) seconds of the report's time axes: the whole input when the manifest
    gives its length, else the span of the tracks; always finite with end > start."""
    pts = [np.asarray(t.pts, np.float64) for t in video.tracks if len(t)]
    fin = np.concatenate(pts) if pts else np.zeros(0)
    fin = fin[np.isfinite(fin)]
    t0, t1 = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    inp = video.manifest.get("input")
    n = inp.get("n_frames") if isinstance(inp, dict) else None
    fps = video_fps(video)
    if isinstance(n, int) and n > 0 and fps:
        t0, t1 = min(t0, 0.0), max(t1, (n - 1) / fps)
    # to the end of the last frame (the timeline draws each frame as [t, t + 1 / fps))
    t1 += 1.0 / (fps or 30.0)
    return t0, (t1 if t1 > t0 else t0 + 1.0)


def _with_gaps(track: TrackData, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x seconds, values) with a NaN between rows whose frames are not consecutive, so the
    curve stops where the track has no rows."""
    x = np.asarray(track.pts, np.float64)
    v = np.asarray(values, np.float64)
    gaps = np.nonzero(np.diff(track.frame_idx) > 1)[0] + 1
    return np.insert(x, gaps, np.nan), np.insert(v, gaps, np.nan)


def _filled_spans(track: TrackData, fps: float) -> list[tuple[float, float]]:
    """(start, stop) seconds of the runs of rows the refiner filled (half a frame either side)."""
    half = 0.5 / fps
    return [(float(track.pts[a]) - half, float(track.pts[b - 1]) + half) for a, b in svg.runs(~track.observed)]


def _angle_plot(rep: TrackReport, x_range: tuple[float, float], fps: float) -> str:
    track = rep.track
    series, x = {}, np.zeros(0)
    for n in MAIN_ANGLES:
        x, series[n] = _with_gaps(track, rep.angles[n]) if len(track) else (np.zeros(0), np.zeros(0))
    side = {"l": "left", "r": "right"}
    labels = {n: f"{side[n[-1]]} {n.split('_')[0]}" for n in MAIN_ANGLES}
    return svg.line_plot(
        x,
        series,
        {n: _ANGLE_COLORS[n.split("_")[0]] for n in MAIN_ANGLES},
        title=f"Track {track.track_id}: hip, knee and elbow flexion",
        xlabel="time (s)",
        ylabel="flexion (degrees)",
        css_class="plot angles",
        dashed=[n for n in MAIN_ANGLES if n.endswith("_r")],
        labels=labels,
        x_range=x_range,
        empty_text="no frames" if len(track) == 0 else "no pose in any frame",
        shade=_filled_spans(track, fps) if len(track) else (),
        shade_label="filled by refiner",
    )


def _top_view(tracks: list[TrackData]) -> list[str]:
    """The "Top view" section: every track's ground path in the world frame (empty without one)."""
    paths = []
    for t in tracks:
        if t.world_transl is None or not len(t) or not np.isfinite(t.world_transl).any():
            continue
        # a NaN row where frames are missing: the path is not drawn across a gap
        gaps = np.nonzero(np.diff(t.frame_idx) > 1)[0] + 1
        xz = np.insert(np.asarray(t.world_transl, np.float64)[:, [0, 2]], gaps, np.nan, axis=0)
        paths.append((f"track {t.track_id}", hex_color(track_color(t.track_id)), xz))
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


def _verdict_class(verdict: str) -> str:
    return {"good": "v-good", "usable with care": "v-care"}.get(verdict, "v-poor")


def gait_sentence(g: Gait) -> str:
    """The gait figures in one plain sentence (plain text)."""
    if g.walking:
        where = "" if g.frame == "world" else f" ({g.note})"
        return (
            f"Walking for {g.walking_s:.1f} s: cadence {g.cadence_steps_min:.0f} steps/min, mean step time "
            f"{g.step_time_s:.2f} s, walking speed {g.speed_m_s:.2f} m/s ({g.n_steps} steps){where}."
        )
    if g.note and "could not" in g.note:
        return f"Gait: {g.note}."
    return (
        f"Not walking: no stretch of at least {gait_mod.MIN_WALK_S:g} s with steps at "
        f"{gait_mod.MIN_WALK_SPEED:g} m/s or faster."
    )


def quality_items(qual: TrackQuality) -> list[str]:
    """The per-track quality list, plain text items."""
    if qual.n_rows == 0:
        return ["No frames: this track has no rows in the output."]
    items = [
        f"Seen in {100 * qual.seen_share:.0f}% of frames ({qual.n_seen} of the {qual.span_frames} frames of its "
        f"{q.seconds(qual.duration_s)})",
        f"Longest gap: {q.seconds(qual.longest_gap_s)}" if qual.longest_gap_s > 0 else "No gaps",
        f"Frames filled in by the refiner: {qual.n_filled}; frames with no estimate: {qual.n_missing}",
    ]
    if qual.n_sudden_turns:
        items.append(
            f"Sudden turns: {qual.n_sudden_turns} frame step(s) where the whole body turns faster than a person can "
            f"({q.MAX_TURN_DEG_S:g} degrees per second): usually the estimate flipping front and back; "
            "angles jump there"
        )
    if qual.n_joins:
        items.append(
            f"Lost and found again by the tracker {qual.n_joins} time(s): check that it is the same person after each gap"
        )
    conf = (
        f"Mean confidence {qual.mean_confidence:.2f} (the pose estimator's own score from 0 to 1; higher is better)"
        if np.isfinite(qual.mean_confidence)
        else "Confidence: none (the person was never detected in this track)"
    )
    items.append(conf)
    return items


def _how_to_read() -> str:
    return (
        '<h2>How to read this report</h2><ul class="quality">'
        f"<li><b>good</b>: seen in at least {100 * q.CARE_SEEN:.0f}% of the frames between its first and last "
        f"appearance, no gap longer than {q.CARE_GAP_S:g} s, at least {q.POOR_DURATION_S:g} s long, mean confidence "
        f"at least {q.CARE_CONFIDENCE:g}.</li>"
        f"<li><b>usable with care</b>: seen in {100 * q.POOR_SEEN:.0f}-{100 * q.CARE_SEEN:.0f}% of frames, a gap longer "
        f"than {q.CARE_GAP_S:g} s, mean confidence {q.POOR_CONFIDENCE:g}-{q.CARE_CONFIDENCE:g}, or a sudden turn "
        f"(the whole body turning faster than {q.MAX_TURN_DEG_S:g} degrees per second between two frames).</li>"
        f"<li><b>poor</b>: seen in under {100 * q.POOR_SEEN:.0f}% of frames, shorter than {q.POOR_DURATION_S:g} s, "
        f"or mean confidence under {q.POOR_CONFIDENCE:g}.</li>"
        "<li><b>Gaps</b> are frames where the person was not detected: the curves stop there; frames the refiner "
        "filled in from its motion model are shaded grey in the plots and striped in the timeline.</li>"
        f"<li><b>Walking</b>: the pelvis moves at {gait_mod.MIN_WALK_SPEED:g} m/s or faster for at least "
        f"{gait_mod.MIN_WALK_S:g} s. A step is counted when one foot is farthest in front of the other; step time is "
        "the mean time between steps, cadence is steps per minute, speed is the pelvis's speed over the ground "
        "(world frame, metres; without a world frame it is measured in the camera's frame and is marked so).</li>"
        "</ul>"
    )


def render_html(video: VideoOutput, reports: Sequence[TrackReport]) -> str:
    """The report page (a complete HTML document, UTF-8, no external resources)."""
    inp = video.manifest.get("input", {}) if isinstance(video.manifest.get("input"), dict) else {}
    fps = video_fps(video) or next((r.track.frame_rate for r in reports if len(r.track) > 1), 30.0)
    t0, t1 = time_range(video)
    nonempty = [r.track for r in reports if len(r.track)]
    f0 = min((int(t.frame_idx[0]) for t in nonempty), default=0)
    f1 = max((int(t.frame_idx[-1]) for t in nonempty), default=1)
    n_frames = inp.get("n_frames")
    if isinstance(n_frames, int) and n_frames > 0:
        f0, f1 = min(f0, 0), max(f1, n_frames - 1)
    rows = [
        (f"track {r.track.track_id}", hex_color(track_color(r.track.track_id)), r.track.frame_idx, r.track.observed)
        for r in reports
    ]
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hmrflow QC: {escape(video.video_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hmrflow QC report: {escape(video.video_id)}</h1>",
        f'<p class="meta">input: {escape(str(inp.get("path", "?")))} &middot; {escape(str(inp.get("width", "?")))}x'
        f"{escape(str(inp.get('height', '?')))} &middot; {escape(str(inp.get('fps', '?')))} fps &middot; "
        f"{len(reports)} track(s) &middot; generated {_dt.datetime.now().isoformat(timespec='seconds')}</p>",
    ]
    table = [
        "<h2>Tracks</h2><table><tr><th>track</th><th>quality</th><th>seen</th><th>longest gap (s)</th>"
        "<th>confidence</th><th>duration (s)</th><th>cadence (steps/min)</th><th>walking speed (m/s)</th></tr>"
    ]
    for r in reports:
        qu, g, tid = r.quality, r.gait, r.track.track_id
        col = hex_color(track_color(tid))
        table.append(
            f'<tr><td><span class="swatch" style="background:{col}"></span> <a href="#track-{tid}">{tid}</a></td>'
            f'<td class="verdict"><span class="{_verdict_class(qu.verdict)}">{escape(qu.verdict_line)}</span></td>'
            f"<td>{100 * qu.seen_share:.0f}%</td><td>{qu.longest_gap_s:.1f}</td><td>{_fmt(qu.mean_confidence)}</td>"
            f"<td>{qu.duration_s:.1f}</td><td>{_fmt(g.cadence_steps_min, 0) if g.walking else 'not walking'}</td>"
            f"<td>{_fmt(g.speed_m_s) if g.walking else '–'}</td></tr>"
        )
    table.append("</table>")
    if not reports:
        table = ["<h2>Tracks</h2><p>No tracks in this output.</p>"]
    body = [
        *head,
        *table,
        _how_to_read(),
        "<h2>Timeline</h2>",
        svg.timeline(rows, (f0, f1), fps=fps) if rows else "",
        '<p class="meta">solid: seen (person detected); striped: filled in by the refiner; empty: no estimate.</p>',
        *_top_view(nonempty),
        "<h2>Per track</h2>",
    ]
    for r in reports:
        tid, qu = r.track.track_id, r.quality
        col = hex_color(track_color(tid))
        thumb = (
            f'<img class="thumb" alt="track {tid} pose" src="{r.thumb}" width="120" height="160">'
            if r.thumb
            else '<div class="nothumb">no pose</div>'
        )
        items = "".join(f"<li>{escape(s)}</li>" for s in quality_items(qu))
        frames = f"frames {int(r.track.frame_idx[0])}&ndash;{int(r.track.frame_idx[-1])}, " if len(r.track) else ""
        jit = (
            f"jitter {r.jitter_m_s3:.0f} m/s&sup3; (mean jerk of the 24 joints: how abruptly the joint positions "
            "change from frame to frame; lower is steadier; for comparing tracks and runs, not a clinical measure)"
            if np.isfinite(r.jitter_m_s3)
            else "jitter: not enough consecutive frames"
        )
        body.append(
            f'<h3 id="track-{tid}"><span class="swatch" style="background:{col}"></span> Track {tid}: '
            f'<span class="{_verdict_class(qu.verdict)}">{escape(qu.verdict_line)}</span></h3>'
            f'<section class="track">{thumb}<div><ul class="quality">{items}</ul>'
            f'<p class="gait">{escape(gait_sentence(r.gait))}</p>{_angle_plot(r, (t0, t1), fps)}'
            '<div class="meta">left solid, right dashed; angle definitions: docs/exports.md</div>'
            f"<details><summary>Technical details</summary>{frames}{r.track.frame_rate:.2f} fps; {jit}.</details>"
            "</div></section>"
        )
    body.append("</body></html>")
    return "\n".join(body)


def _png_runs(frame_idx: np.ndarray, ok: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) row ranges of consecutive frames whose values are all finite."""
    brk = np.concatenate([[True], np.diff(frame_idx) != 1]) if len(frame_idx) else np.zeros(0, bool)
    out = []
    for a, b in svg.runs(ok):
        starts = [a, *[i for i in range(a + 1, b) if brk[i]], b]
        out += [(s, e) for s, e in zip(starts[:-1], starts[1:])]
    return out


def _png_time_axis(d: Any, y: int, sx: Any, t0: float, t1: float) -> None:
    """Ticks (seconds) and the "time (s)" label below a plot or the timeline whose bottom is ``y``."""
    d.line([(PNG_LEFT, y), (PNG_WIDTH - PNG_RIGHT, y)], fill=PNG_AXIS, width=1)
    for t in svg.nice_ticks(t0, t1, 8):
        x = sx(t)
        d.line([(x, y), (x, y + 4)], fill=PNG_AXIS, width=1)
        d.text((x - 8, y + 5), f"{t:g}", fill="black")
    d.text((PNG_WIDTH - PNG_RIGHT - 50, y + 16), "time (s)", fill="black")


def png_lines(r: TrackReport) -> tuple[str, str]:
    """The two text lines above a track's PNG plot: its verdict, then seen share, longest gap,
    confidence and the gait figures."""
    qu = r.quality
    gait_line = gait_sentence(r.gait) if r.gait.walking else "not walking"
    gap = f"longest gap {q.seconds(qu.longest_gap_s)}" if qu.longest_gap_s > 0 else "no gaps"
    conf = f"mean confidence {qu.mean_confidence:.2f}" if np.isfinite(qu.mean_confidence) else "never detected"
    return (
        f"track {r.track.track_id}: {qu.verdict_line}",
        f"seen in {100 * qu.seen_share:.0f}% of frames, {gap}, {conf}; {gait_line}",
    )


def render_png(video: VideoOutput, reports: Sequence[TrackReport]) -> Any:
    """A PIL image: title, timeline (seconds), and per track its verdict, gait line and a plot
    of hip and knee flexion with a legend and a time axis; gaps are left open."""
    from PIL import Image, ImageDraw

    width, row_h, plot_h, block_h = PNG_WIDTH, 16, 90, 90 + 80
    n = len(reports)
    tl_h = row_h * max(n, 1) + 34
    height = 40 + tl_h + block_h * n + 10
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 10), f"hmrflow QC: {video.video_id}  ({n} tracks)", fill="black")
    fps = video_fps(video) or next((r.track.frame_rate for r in reports if len(r.track) > 1), 30.0)
    t0, t1 = time_range(video)
    pw = width - PNG_LEFT - PNG_RIGHT

    def sx(t: float) -> float:
        return PNG_LEFT + (t - t0) / (t1 - t0) * pw

    for k, r in enumerate(reports):
        y = 36 + k * row_h
        t = r.track
        d.text((10, y), f"track {t.track_id}", fill="black")
        col = track_color(t.track_id)
        for i, p in enumerate(np.asarray(t.pts, np.float64)):
            if np.isfinite(p):
                d.rectangle(
                    [sx(p), y + 2, sx(p + 1 / fps), y + row_h - 3], fill=col if t.observed[i] else (200, 200, 200)
                )
    _png_time_axis(d, 36 + row_h * max(n, 1) + 2, sx, t0, t1)
    y = 40 + tl_h
    for r in reports:
        t = r.track
        title, line = png_lines(r)
        d.text((10, y), title, fill="black")
        x = width - PNG_RIGHT
        for _, label, col in reversed(PNG_SERIES):  # legend, right-aligned on the title line
            x -= 8 + 6 * len(label)
            d.text((x, y), label, fill="black")
            x -= 22
            d.line([(x, y + 6), (x + 18, y + 6)], fill=col, width=3)
        d.text((10, y + 14), line, fill=(60, 60, 60))
        top, bot = y + 30, y + 30 + plot_h
        d.rectangle([PNG_LEFT, top, width - PNG_RIGHT, bot], outline=(150, 150, 150))
        d.text((10, top + plot_h // 2 - 5), "flexion (deg)", fill="black")
        vals = np.concatenate([r.angles[name] for name, _, _ in PNG_SERIES]) if len(t) else np.zeros(0)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            pad = 0.05 * (hi - lo) if hi > lo else 1.0  # keep curves off the frame
            lo, hi = lo - pad, hi + pad
            # round() and not a format spec: "-0" is no label for a clinician
            d.text((PNG_LEFT - 30, top), f"{round(hi)}", fill="black")
            d.text((PNG_LEFT - 30, bot - 10), f"{round(lo)}", fill="black")
            for name, _, col in PNG_SERIES:
                v = np.asarray(r.angles[name], np.float64)
                ok = np.isfinite(v) & np.isfinite(t.pts)
                for a, b in _png_runs(t.frame_idx, ok):
                    pts = [(sx(float(t.pts[i])), bot - (v[i] - lo) / (hi - lo) * plot_h) for i in range(a, b)]
                    if len(pts) > 1:
                        d.line(pts, fill=col, width=2)
                    else:
                        (px, py) = pts[0]
                        d.ellipse([px - 1.5, py - 1.5, px + 1.5, py + 1.5], fill=col)
        else:
            d.text((PNG_LEFT + pw // 2 - 40, top + plot_h // 2 - 5), "no pose" if len(t) else "no frames", fill="black")
        _png_time_axis(d, bot, sx, t0, t1)
        y += block_h
    return img


def analyse_video(video: VideoOutput, body_model: Any) -> list[TrackReport]:
    """One :class:`TrackReport` per track of ``video`` (every track, in id order)."""
    fps, joins = video_fps(video), _joins(video)
    return [analyse_track(t, body_model, fps, joins.get(t.track_id, ())) for t in video.tracks]


def build_report(video_dir: str | Path, body_model: Any = None, dest: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.png`` for ``OUT/<video_id>/`` into ``dest`` (default: that folder).

    ``body_model``: for joint positions (gait, jitter, thumbnails); default the synthetic body.
    Returns the two paths.
    """
    if body_model is None:
        from hmrflow.priors.body_model import load_body_model

        body_model = load_body_model("synthetic")
    video = load_video_output(video_dir)
    folder = Path(dest) if dest is not None else video.path
    folder.mkdir(parents=True, exist_ok=True)
    reports = analyse_video(video, body_model)
    html_path = folder / HTML_NAME
    html_path.write_text(render_html(video, reports), encoding="utf-8")
    png_path = folder / PNG_NAME
    render_png(video, reports).save(png_path)
    log.info("%s: report %s", video.video_id, html_path)
    return html_path, png_path
