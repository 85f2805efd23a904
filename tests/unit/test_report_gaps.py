"""The QC report with awkward tracks: gaps, no pose at all, a single frame, no frames.

Every track gets a plot and a section; gaps split the curves (HTML and PNG); no NaN or
infinity reaches the SVG; both the HTML plots and the PNG have a time axis in seconds and
a legend.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.export.reading import TrackData, VideoOutput
from hmrflow.jobs.report import html as rep
from hmrflow.jobs.report.svg import nice_ticks
from hmrflow.priors.body_model import load_body_model

SVG_NS = "{http://www.w3.org/2000/svg}"
FPS = 30.0
#: SVG attributes that hold numbers (``points`` holds pairs).
_NUMERIC = ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height")


def make_track(tid: int, frames: np.ndarray, *, no_pose: bool = False, world: bool = False) -> TrackData:
    """A track facing the camera with random joint rotations on ``frames`` (every 5th row filled)."""
    f = np.asarray(frames, np.int64)
    n = len(f)
    rng = np.random.default_rng(tid)
    poses = rng.normal(scale=0.25, size=(n, 72)).astype(np.float32)
    poses[:, :3] = [np.pi, 0.0, 0.0]  # upright in the OpenCV camera
    if no_pose:
        poses[:] = np.nan
    path = np.c_[np.linspace(0, 1, n), np.zeros(n), np.full(n, 4.0)].astype(np.float32)
    return TrackData(
        track_id=tid,
        frame_idx=f,
        pts=f / FPS,
        poses=poses,
        transl=np.tile(np.float32([0.0, 0.2, 4.0]), (n, 1)),
        betas=np.zeros(10, np.float32),
        observed=np.arange(n) % 5 != 0,
        confidence=np.full(n, 0.4, np.float32),
        world_orient=np.zeros((n, 3), np.float32) if world else None,
        world_transl=path if world else None,
    )


def video_of(tracks: list[TrackData], n_frames: int = 40) -> VideoOutput:
    return VideoOutput("v", Path("."), tracks, {"input": {"fps": FPS, "n_frames": n_frames}})


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("synthetic")


@pytest.fixture(scope="module")
def awkward(body_model) -> tuple[VideoOutput, str, np.ndarray]:
    """Track 1 gapped (frames 0-9 and 20-39), 2 without any pose, 3 a single frame, 4 empty."""
    video = video_of(
        [
            make_track(1, np.r_[0:10, 20:40], world=True),
            make_track(2, np.arange(5, 25), no_pose=True),
            make_track(3, np.array([7])),
            make_track(4, np.zeros(0, np.int64)),
        ]
    )
    reports = rep.analyse_video(video, body_model)
    return video, rep.render_html(video, reports), np.asarray(rep.render_png(video, reports).convert("RGB"))


def _svgs(text: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", text, flags=re.S)


def _plot(text: str, tid: int) -> ET.Element:
    block = re.search(rf'<svg[^>]*class="plot angles"[^>]*aria-label="Track {tid}:[^"]*".*?</svg>', text, flags=re.S)
    assert block is not None, f"no plot for track {tid}"
    return ET.fromstring(block.group(0))


def test_no_nan_or_inf_reaches_the_svg(awkward) -> None:
    _, text, _ = awkward
    assert not re.search(r"\b(nan|inf|infinity)\b", text, flags=re.I)
    for block in _svgs(text):
        root = ET.fromstring(block)
        for el in root.iter():
            for key in _NUMERIC:
                if key in el.attrib:
                    assert np.isfinite(float(el.attrib[key])), (el.tag, key, el.attrib[key])
            if "points" in el.attrib:
                pts = np.array([p.split(",") for p in el.attrib["points"].split()], float)
                assert pts.size and np.isfinite(pts).all()


def test_every_track_is_plotted_and_a_gap_splits_the_curve(awkward) -> None:
    _, text, _ = awkward
    for tid in (1, 2, 3, 4):
        assert f'id="track-{tid}"' in text
    knee = [p for p in _plot(text, 1).iter(f"{SVG_NS}polyline") if p.get("data-name") == "knee_flexion_l"]
    assert [len(p.get("points").split()) for p in knee] == [10, 20]  # frames 0-9 | 20-39
    # the ground path in the top view is not drawn across the gap either
    top = ET.fromstring(re.search(r'<svg class="topview".*?</svg>', text, flags=re.S).group(0))
    assert [len(p.get("points").split()) for p in top.iter(f"{SVG_NS}polyline")] == [10, 20]
    # the single frame is a dot per curve; the others say why they are empty
    assert len([c for c in _plot(text, 3).iter(f"{SVG_NS}circle") if c.get("class") == "series"]) == 6
    assert _plot(text, 2).find(f"{SVG_NS}text[@class='empty']").text == "no pose in any frame"
    assert _plot(text, 4).find(f"{SVG_NS}text[@class='empty']").text == "no frames"


def test_html_plots_have_a_time_axis_in_seconds_and_a_legend(awkward) -> None:
    _, text, _ = awkward
    for tid in (1, 2, 3, 4):
        root = _plot(text, tid)
        texts = [t.text for t in root.iter(f"{SVG_NS}text")]
        assert "time (s)" in texts
        ticks = [t for t in root.iter(f"{SVG_NS}line") if t.get("class") == "xtick"]
        # the axis spans the whole clip (40 frames at 30 fps), ticks at round seconds
        assert len(ticks) == len(nice_ticks(0.0, 40 / FPS)) >= 3
        legend = [t.text for g in root.iter(f"{SVG_NS}g") if g.get("class") == "legend" for t in g]
        assert {"left knee", "right knee", "left hip", "right hip", "left elbow", "right elbow"} <= set(legend)
    tl = ET.fromstring(re.search(r'<svg[^>]*class="timeline".*?</svg>', text, flags=re.S).group(0))
    assert "time (s)" in [t.text for t in tl.iter(f"{SVG_NS}text")]
    # filled frames are shaded in the plot of the gapped track (rows 0, 5, ... are filled)
    shades = [r for r in _plot(text, 1).iter(f"{SVG_NS}rect") if r.get("class") == "shade"]
    assert len(shades) == int((~awkward[0].tracks[0].observed).sum())


def _series_mask(img: np.ndarray) -> np.ndarray:
    """(H, W) pixels painted in one of the PNG's curve colours."""
    cols = np.array([c for _, _, c in rep.PNG_SERIES])
    return (img[:, :, None, :] == cols[None, None]).all(-1).any(-1)


def test_png_leaves_gaps_open(body_model) -> None:
    video = video_of([make_track(5, np.r_[0:10, 30:40])])
    img = np.asarray(rep.render_png(video, rep.analyse_video(video, body_model)).convert("RGB"))
    paint = _series_mask(img)
    t0, t1 = rep.time_range(video)
    sx = lambda t: rep.PNG_LEFT + (t - t0) / (t1 - t0) * (rep.PNG_WIDTH - rep.PNG_LEFT - rep.PNG_RIGHT)  # noqa: E731
    gap = slice(int(sx(10 / FPS)) + 3, int(sx(29 / FPS)) - 3)  # between the last frame before and the first after
    assert paint[:, : int(sx(9 / FPS))].sum() > 50 and paint[:, int(sx(30 / FPS)) + 1 :].sum() > 50
    assert gap.stop - gap.start > 100
    # the legend sits right of the gap, on the title line; nothing else may be painted there
    legend_x = int(np.nonzero(paint.any(0))[0].max()) - 400
    assert paint[:, gap.start : min(gap.stop, legend_x)].sum() == 0


def test_png_has_legend_and_time_axes_even_without_a_pose(awkward) -> None:
    video, _, img = awkward
    # every curve colour appears: the curves of track 1 and the legends of all four tracks
    cols = [c for _, _, c in rep.PNG_SERIES]
    for c in cols:
        assert (img == np.array(c)).all(-1).sum() >= 4 * 18, c  # at least the four legend swatches
    # tick marks below the timeline and below each of the four plots, at the seconds of nice_ticks
    axis = (img == np.array(rep.PNG_AXIS)).all(-1)
    t0, t1 = rep.time_range(video)
    pw = rep.PNG_WIDTH - rep.PNG_LEFT - rep.PNG_RIGHT
    n_axes = 1 + len(video.tracks)
    for t in nice_ticks(t0, t1, 8):
        x = rep.PNG_LEFT + (t - t0) / (t1 - t0) * pw
        col = max(axis[:, c].sum() for c in range(int(x) - 1, int(x) + 2))
        assert col >= 5 * n_axes, (t, col)  # the axis line plus a 4-pixel tick, per axis
    mid = rep.PNG_LEFT + (0.5 * (nice_ticks(t0, t1, 8)[0] + nice_ticks(t0, t1, 8)[1]) - t0) / (t1 - t0) * pw
    assert axis[:, int(mid)].sum() == n_axes  # between ticks only the axis lines
