"""QC report: self-contained HTML with one SVG plot per track, timeline, PNG summary."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmrflow.jobs.report.colors import hex_color, track_color
from hmrflow.jobs.report.html import build_report
from hmrflow.jobs.report.svg import line_plot, nice_ticks, timeline
from tests.unit.test_export import make_sequence, write_output

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("rep")
    seqs = [make_sequence(rng, 2, np.arange(0, 30)), make_sequence(rng, 7, np.r_[5:15, 20:34])]
    out = write_output(root, seqs)
    html, png = build_report(out)
    return out, html, png


def test_html_is_self_contained_with_a_plot_per_track(report: tuple[Path, Path, Path]) -> None:
    _, html, _ = report
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    svgs = re.findall(r"<svg\b.*?</svg>", text, flags=re.S)
    plots = [s for s in svgs if 'class="plot angles"' in s]
    assert len(plots) == 2 and sum('class="timeline"' in s for s in svgs) == 1
    for s in svgs:  # each SVG is well-formed XML
        ET.fromstring(s)
    assert 'id="track-2"' in text and 'id="track-7"' in text
    assert len(re.findall(r'<img class="thumb"[^>]*src="data:image/png;base64,', text)) == 2


def test_angle_plot_has_gap_where_track_skips_frames(report: tuple[Path, Path, Path]) -> None:
    text = report[1].read_text(encoding="utf-8")
    plot7 = re.search(r'<svg[^>]*class="plot angles"[^>]*aria-label="Track 7[^"]*".*?</svg>', text, flags=re.S).group(0)
    root = ET.fromstring(plot7)
    knee = [p for p in root.iter(f"{SVG_NS}polyline") if p.get("data-name") == "knee_flexion_l"]
    assert len(knee) == 2  # frames 5-14 and 20-33
    assert [len(p.get("points").split()) for p in knee] == [10, 14]


def test_timeline_marks_observed_and_filled(report: tuple[Path, Path, Path]) -> None:
    out, html, _ = report
    import pyarrow.parquet as pq

    df = pq.read_table(out / "tracks.parquet").to_pandas()
    text = html.read_text(encoding="utf-8")
    tl = ET.fromstring(re.search(r'<svg[^>]*class="timeline".*?</svg>', text, flags=re.S).group(0))
    rects = [r for r in tl.iter(f"{SVG_NS}rect") if r.get("class") in ("observed", "filled")]
    # frames covered by the rects' titles equal the rows of each kind
    covered = {"observed": 0, "filled": 0}
    for r in rects:
        a, b = map(int, re.search(r"frames (\d+)-(\d+)", r.find(f"{SVG_NS}title").text).groups())
        covered[r.get("class")] += b - a + 1
    assert covered["observed"] == int(df["observed"].sum())
    assert covered["filled"] == int((~df["observed"]).sum())
    assert any(r.get("fill") == hex_color(track_color(2)) for r in rects)


def test_png_summary(report: tuple[Path, Path, Path]) -> None:
    img = np.asarray(Image.open(report[2]).convert("RGB"))
    assert img.shape[1] == 900 and img.shape[0] > 200
    assert (np.abs(img.astype(int) - np.array(track_color(7))).sum(-1) == 0).sum() > 20  # track colour drawn


def test_track_colors_stable_and_distinct() -> None:
    assert track_color(3) == track_color(3)
    cols = [np.array(track_color(i)) for i in range(8)]
    assert min(np.abs(a - b).sum() for i, a in enumerate(cols) for b in cols[i + 1 :]) > 40


def test_svg_helpers() -> None:
    assert nice_ticks(0, 100, 5) == [0, 20, 40, 60, 80, 100]
    s = line_plot(np.arange(5.0), {"a": np.array([0, 1, np.nan, 3, 4.0])}, {"a": "#f00"})
    assert s.count("<polyline") == 2
    t = timeline([("t", "#0f0", np.array([0, 1, 2, 5]), np.array([True, True, False, False]))], (0, 9))
    assert t.count('class="observed"') == 1 and t.count('class="filled"') == 2


def test_cli_report(report: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from hmrflow.jobs.cli import main

    assert main(["report", str(report[0].parent), "--dest", str(tmp_path)]) == 0
    assert (tmp_path / report[0].name / "report.html").is_file()


def test_top_view_draws_each_tracks_world_path(tmp_path: Path) -> None:
    import dataclasses

    rng = np.random.default_rng(5)
    seqs = []
    for tid, z0 in ((3, 4.0), (8, 6.0)):
        s = make_sequence(rng, tid, np.arange(0, 30))
        path = np.stack([np.linspace(-2, 2, 30), np.zeros(30), np.full(30, z0)], 1).astype(np.float32)
        seqs.append(
            dataclasses.replace(s, world_rotmat=np.tile(np.eye(3, dtype=np.float32), (30, 1, 1)), world_transl=path)
        )
    html, _ = build_report(write_output(tmp_path, seqs))
    text = html.read_text(encoding="utf-8")
    tops = re.findall(r'<svg class="topview".*?</svg>', text, flags=re.S)
    assert len(tops) == 1
    root = ET.fromstring(tops[0])
    lines = root.findall(f"{SVG_NS}polyline")
    assert [ln.find(f"{SVG_NS}title").text for ln in lines] == ["track 3", "track 8"]
    pts = [np.array([p.split(",") for p in ln.get("points").split()], float) for ln in lines]
    assert pts[0][0, 0] > pts[0][-1, 0]  # +x (the camera's left) is drawn on the left
    assert pts[1][0, 1] < pts[0][0, 1]  # the farther track is higher up the page
    # without world columns there is no top view (the module fixture's outputs)
    (tmp_path / "no").mkdir()
    out = write_output(tmp_path / "no", [make_sequence(rng, 1, np.arange(10))])
    assert "topview" not in build_report(out)[0].read_text(encoding="utf-8")
