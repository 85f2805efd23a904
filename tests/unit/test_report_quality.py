"""Per-track quality in plain words (jobs/report/quality.py) and how the report shows it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.export.reading import VideoOutput
from hmrflow.jobs.report import html as rep
from hmrflow.jobs.report import quality as q
from hmrflow.priors.body_model import load_body_model
from tests.unit.test_report_gaps import FPS, make_track


def holed_track():
    """Frames 0-99 at 30 fps without rows at 40-74 (35 frames) and rows 80-89 filled."""
    frames = np.r_[0:40, 75:100]
    t = make_track(9, frames)
    observed = ~((frames >= 80) & (frames < 90))
    conf = np.where(observed, 0.5, 0.0).astype(np.float32)
    return dataclasses.replace(t, observed=observed, confidence=conf)


def test_counts_and_verdict_of_a_holed_track() -> None:
    qu = q.track_quality(holed_track(), FPS, joins=[{"gap_s": 1.2}])
    assert (qu.span_frames, qu.n_rows, qu.n_seen, qu.n_filled, qu.n_missing, qu.n_joins) == (100, 65, 55, 10, 35, 1)
    assert qu.seen_share == pytest.approx(0.55)
    assert qu.longest_gap_s == pytest.approx(35 / FPS)
    assert qu.duration_s == pytest.approx(100 / FPS)
    assert qu.mean_confidence == pytest.approx(0.5)  # filled rows (confidence 0) do not count
    assert qu.verdict_line == "usable with care: seen in 55% of frames; 1.2 s gap"


def test_verdict_thresholds() -> None:
    good = q.verdict(0.95, 0.2, 10.0, 0.4, 300)
    assert good == ("good", ())
    assert q.verdict(q.CARE_SEEN, q.CARE_GAP_S, q.POOR_DURATION_S, q.CARE_CONFIDENCE, 30)[0] == "good"  # limits pass
    assert q.verdict(0.3, 0.0, 10.0, 0.4, 300) == ("poor", ("seen in 30% of frames",))
    assert q.verdict(0.9, 2.1, 10.0, 0.4, 300) == ("usable with care", ("2.1 s gap",))
    assert q.verdict(0.9, 0.0, 0.5, 0.4, 15) == ("poor", ("only 0.5 s long",))
    assert q.verdict(0.9, 0.0, 10.0, 0.15, 300) == ("usable with care", ("low confidence",))
    assert q.verdict(0.9, 0.0, 10.0, 0.05, 300) == ("poor", ("low confidence",))
    assert q.verdict(0.0, 0.0, 0.0, float("nan"), 0) == ("poor", ("no frames",))
    assert q.verdict(0.9, 0.0, 10.0, 0.4, 300, n_posed=0)[1] == ("no pose in any frame",)


def test_report_speaks_plainly(tmp_path: Path) -> None:
    track = holed_track()
    video = VideoOutput(
        "v",
        tmp_path,
        [track],
        {"input": {"fps": FPS, "n_frames": 100}, "tracks": [{"track_id": 9, "joins": [{"gap_s": 1.2}]}]},
    )
    reports = rep.analyse_video(video, load_body_model("synthetic"))
    text = rep.render_html(video, reports)
    assert rep.png_lines(reports[0]) == (
        "track 9: usable with care: seen in 55% of frames; 1.2 s gap",
        "seen in 55% of frames, longest gap 1.2 s, mean confidence 0.50; not walking",
    )
    assert "usable with care: seen in 55% of frames; 1.2 s gap" in text
    assert "<td>not walking</td>" in text
    assert "Seen in 55% of frames (55 of the 100 frames of its 3.3 s)" in text
    assert "Longest gap: 1.2 s" in text and "Frames filled in by the refiner: 10; frames with no estimate: 35" in text
    assert "Lost and found again by the tracker 1 time(s)" in text
    assert "Mean confidence 0.50" in text
    assert "How to read this report" in text and f"gap longer than {q.CARE_GAP_S:g} s" in text
    # jargon is folded away with its explanation: jitter only inside the technical details
    outside = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
    assert "jitter" not in outside.lower() and "m/s&sup3;" not in outside
    details = re.findall(r"<details>.*?</details>", text, flags=re.S)
    assert len(details) == 1 and "how abruptly the joint positions change" in details[0]


def test_sudden_turns_flag_front_back_flips_only() -> None:
    """A body turning steadily (a walk's curve, a quick pivot at 600 deg/s) is not flagged;
    a 150-degree flip within two frames is, once per offending step, and the verdict says so."""
    import dataclasses

    from scipy.spatial.transform import Rotation

    t = 90
    heading = np.concatenate([np.linspace(0, 90, 60), 90 + 20 * np.arange(1, 31)])  # 20 deg/frame = 600 deg/s
    orient = Rotation.from_euler("y", heading[:, None], degrees=True).as_rotvec()
    base = dataclasses.replace(holed_track(), observed=np.ones(len(holed_track()), bool))
    n = len(base)
    track = dataclasses.replace(
        base,
        frame_idx=np.arange(t),
        pts=np.arange(t) / FPS,
        poses=np.zeros((t, 72), np.float32),
        transl=np.zeros((t, 3), np.float32),
        observed=np.ones(t, bool),
        confidence=np.full(t, 0.5, np.float32),
        world_orient=orient.astype(np.float32),
        world_transl=np.zeros((t, 3), np.float32),
    )
    assert n > 0 and q.sudden_turns(track).size == 0
    flipped = heading.copy()
    flipped[40:43] += np.array([75.0, 150.0, 150.0])  # the estimate flips over two frame steps, stays 3 frames
    bad = dataclasses.replace(
        track, world_orient=Rotation.from_euler("y", flipped[:, None], degrees=True).as_rotvec().astype(np.float32)
    )
    assert q.sudden_turns(bad).tolist() == [39, 40, 42]
    qual = q.track_quality(bad, FPS)
    assert qual.n_sudden_turns == 3
    assert qual.verdict == "usable with care" and "3 sudden turns (front/back flips?)" in qual.reasons
