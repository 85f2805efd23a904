"""The QC report opened in headless Chromium, as a person would: the page renders and the plots show.

Skipped when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmrflow.jobs.report.colors import track_color
from hmrflow.jobs.report.html import build_report
from tests.unit.test_export import make_sequence, write_output


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


def _chrome(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
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
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("browser")
    out = write_output(root, [make_sequence(rng, 1, np.arange(0, 40)), make_sequence(rng, 3, np.arange(10, 40))])
    return build_report(out)[0]


def test_dom_has_the_plots(html: Path, tmp_path: Path) -> None:
    res = _chrome(["--dump-dom", html.as_uri()], tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "hmrflow QC report" in dom
    assert dom.count('class="plot angles"') == 2 and dom.count('class="timeline"') == 1
    assert dom.count("<polyline") >= 12  # 6 angle curves per track


def test_screenshot_shows_the_page(html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    res = _chrome(
        [f"--screenshot={shot}", "--window-size=1100,1400", "--hide-scrollbars", html.as_uri()], tmp_path / "profile"
    )
    assert shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (1400, 1100)
    assert img.std() > 10  # not blank
    # the timeline bars are painted in the tracks' colours
    for tid in (1, 3):
        hits = (np.abs(img - np.array(track_color(tid))).sum(-1) <= 6).sum()
        assert hits > 200, (tid, hits)
    # the plot curves are painted (knee flexion red #d62728)
    assert (np.abs(img - np.array([214, 39, 40])).sum(-1) <= 40).sum() > 50
