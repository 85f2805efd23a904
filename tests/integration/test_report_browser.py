"""The QC report opened in headless Chromium, as a person would: the page renders and the
plots show, including the curves of a track with a gap.

Needs Chromium (Debian: ``apt-get install chromium``; ``bash jobs/bootstrap.sh test``
installs it when run as root).  Without it the tests are skipped, unless
``HMRFLOW_REQUIRE_BROWSER=1`` (set by CI, ``.ci/run``): then they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmrflow.jobs.report.colors import track_color
from hmrflow.jobs.report.html import build_report
from tests.unit.test_export import make_sequence, write_output

#: Executable names of Chromium (Debian's package installs ``/usr/bin/chromium``) and Chrome.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of the first Chromium/Chrome on PATH, else None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def need_browser(path: str | None, require: bool) -> str:
    """``path``, or skip the test (fail it when ``require``: CI must not skip silently)."""
    if path is None:
        msg = f"no Chromium on PATH (tried {', '.join(BROWSERS)}; Debian: apt-get install chromium)"
        if require:
            pytest.fail(msg + " and HMRFLOW_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return need_browser(find_chromium(), os.environ.get("HMRFLOW_REQUIRE_BROWSER") == "1")


def _chrome(browser: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Track 1 seen throughout, track 3 with a hole at frames 15-24 (two pieces per curve)."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("browser")
    seqs = [make_sequence(rng, 1, np.arange(0, 40)), make_sequence(rng, 3, np.r_[2:15, 25:40])]
    return build_report(write_output(root, seqs))[0]


def test_missing_browser_fails_when_required() -> None:
    with pytest.raises(pytest.fail.Exception):
        need_browser(None, require=True)
    with pytest.raises(pytest.skip.Exception):
        need_browser(None, require=False)
    assert need_browser("/usr/bin/chromium", require=True) == "/usr/bin/chromium"


def test_dom_has_the_plots(chromium: str, html: Path, tmp_path: Path) -> None:
    res = _chrome(chromium, ["--dump-dom", html.as_uri()], tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "hmrflow QC report" in dom
    assert dom.count('class="plot angles"') == 2 and dom.count('class="timeline"') == 1
    assert dom.count("<polyline") == 6 + 12  # 6 curves; the gapped track's in two pieces each


# Appended to a copy of the report (the report itself has no scripts): the laid-out size of
# every curve piece of every plot, and where each plot's data area is on the page, written
# into the DOM for --dump-dom to return.
_MEASURE = """<script>
const out = {};
for (const svg of document.querySelectorAll('svg.plot')) {
  const r = svg.querySelector('rect').getBoundingClientRect();
  out[svg.getAttribute('aria-label')] = {
    area: [r.left + scrollX, r.top + scrollY, r.width, r.height],
    pieces: [...svg.querySelectorAll('polyline.series')].map(p => {
      const b = p.getBBox();
      return {name: p.dataset.name, w: b.width, h: b.height, len: p.getTotalLength(),
              shown: getComputedStyle(p).visibility === 'visible' && getComputedStyle(p).display !== 'none'};
    })};
}
const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""
WINDOW = "--window-size=1100,2400"


@pytest.fixture(scope="module")
def measured(chromium: str, html: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(the measuring copy of the report, plot label -> {"area": [x, y, w, h] px, "pieces": [...]})."""
    tmp = tmp_path_factory.mktemp("measure")
    page = tmp / "measure.html"
    page.write_text(html.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    res = _chrome(chromium, [WINDOW, "--dump-dom", page.as_uri()], tmp / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', res.stdout, flags=re.S)
    assert found is not None, res.stdout[-2000:]
    return page, json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_gapped_track_curves_are_laid_out(measured: tuple[Path, dict]) -> None:
    gapped = next(v for k, v in measured[1].items() if k.startswith("Track 3"))["pieces"]
    knee = [p for p in gapped if p["name"] == "knee_flexion_l"]
    assert len(knee) == 2
    for piece in gapped:  # every piece is painted with a real extent and length
        assert piece["shown"] and piece["w"] > 20 and piece["h"] > 1 and piece["len"] > 20, piece
    # the two pieces span 12 and 14 frame steps of the same axis: widths in that ratio
    assert knee[1]["w"] / knee[0]["w"] == pytest.approx(14 / 12, rel=0.1)


def test_screenshot_shows_the_page(chromium: str, measured: tuple[Path, dict], tmp_path: Path) -> None:
    page, plots = measured
    shot = tmp_path / "shot.png"
    res = _chrome(chromium, [f"--screenshot={shot}", WINDOW, "--hide-scrollbars", page.as_uri()], tmp_path / "profile")
    assert shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2400, 1100)
    assert img.std() > 10  # not blank
    # the timeline bars are painted in the tracks' colours
    for tid in (1, 3):
        hits = (np.abs(img - np.array(track_color(tid))).sum(-1) <= 6).sum()
        assert hits > 200, (tid, hits)
    # both plots have their knee flexion curves (red #d62728) painted inside the data area, the
    # gapped track's in two pieces: the red columns fall into two groups with a gap between
    red = np.abs(img - np.array([214, 39, 40])).sum(-1) <= 40
    for label, pieces in (("Track 1", 1), ("Track 3", 2)):
        x, y, w, h = (int(round(v)) for v in next(v for k, v in plots.items() if k.startswith(label))["area"])
        area = red[y + 2 : y + h - 2, x + 2 : x + w - 2]
        assert area.sum() > 100, label
        hit = np.nonzero(area.any(0))[0]
        assert 1 + int((np.diff(hit) > 15).sum()) == pieces, label
