"""Scheduled job specs: strict validation, path resolution, strictness, inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hmrflow.jobs.batch.inputs import InputError
from hmrflow.jobs.batch.job_spec import job_inputs, load_job_spec
from hmrflow.pipeline.config import load_config
from hmrflow.pipeline.errors import ConfigError

GOOD = """
name: gait-nightly
inputs:
  - folder: incoming
    patterns: ["**/*.mp4"]
  - manifest: lists/extra.csv
preset: clinical
overrides: ["refine.steps=30"]
output: out
max_attempts: 2
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_valid_spec_resolves_paths_and_strictness(tmp_path: Path) -> None:
    spec = load_job_spec(_write(tmp_path, GOOD))
    assert spec.name == "gait-nightly" and spec.strict is True and spec.max_attempts == 2
    assert spec.output == str(tmp_path / "out")
    assert spec.inputs[0].folder == str(tmp_path / "incoming")
    assert spec.inputs[1].manifest == str(tmp_path / "lists" / "extra.csv")
    assert spec.config_overrides() == ["refine.steps=30", "decode.allow_truncated=false"]
    cfg = load_config(spec.preset, spec.config_overrides())
    assert cfg.preset == "clinical" and cfg.refine.steps == 30 and cfg.decode.allow_truncated is False


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "colour: red\n", "unknown key 'colour'"),
        (GOOD.replace("max_attempts: 2", "max_attempts: 0"), "max_attempts"),
        (GOOD.replace("name: gait-nightly", "name: ../evil"), "name"),
        (GOOD.replace("  - manifest: lists/extra.csv", "  - manifest: a.csv\n    folder: b"), "exactly one of"),
        (GOOD.replace('    patterns: ["**/*.mp4"]\n', "    patterns: []\n"), "'patterns' is empty"),
        ("name: x\noutput: o\ninputs: []\n", "inputs"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_specs_are_rejected_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_job_spec(_write(tmp_path, text))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="job spec not found"):
        load_job_spec(tmp_path / "nope.yaml")


def test_job_inputs_from_folders_and_manifests(tmp_path: Path) -> None:
    for rel in ("incoming/a.mp4", "incoming/day2/b.mp4", "incoming/skip.mov", "lists/c.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "lists" / "extra.csv").write_text("path,subject\nc.mp4,S9\n")
    vids = {v.video_id: v for v in job_inputs(load_job_spec(_write(tmp_path, GOOD)))}
    assert set(vids) == {"a", "b", "c"}  # skip.mov does not match the pattern
    assert vids["c"].metadata == {"subject": "S9"}


def test_missing_folder_fails_strict_runs_only(tmp_path: Path) -> None:
    text = "name: n\noutput: o\ninputs:\n  - folder: absent\n  - folder: here\n"
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "v.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="input folder not found"):
        job_inputs(load_job_spec(_write(tmp_path, text)))
    lenient = load_job_spec(_write(tmp_path, text + "strict: false\n"))
    assert [v.video_id for v in job_inputs(lenient)] == ["v"]
    assert lenient.config_overrides() == []


def test_spec_window_becomes_decode_start_end(tmp_path: Path) -> None:
    spec = load_job_spec(_write(tmp_path, GOOD + "start: 2\nend: 900f\n"))
    assert (spec.start, spec.end) == ("2s", "900f")
    assert spec.config_overrides() == [
        "decode.start=2s",
        "decode.end=900f",
        "refine.steps=30",
        "decode.allow_truncated=false",
    ]
    cfg = load_config(spec.preset, spec.config_overrides())
    assert (cfg.decode.start, cfg.decode.end) == ("2s", "900f")
    # an explicit override comes later and wins
    spec = load_job_spec(_write(tmp_path, GOOD.replace('["refine.steps=30"]', '["decode.start=3s"]') + "start: 2\n"))
    assert load_config(spec.preset, spec.config_overrides()).decode.start == "3s"


@pytest.mark.parametrize(
    "extra, message",
    [
        ("start: 1.2x\n", r"job spec .*job\.yaml: invalid config: start: expected seconds .* \(got '1\.2x'\)"),
        ("end: -4\n", r"end: must not be negative"),
        ("start: 5s\nend: 2s\n", r"end 2s must be after start 5s"),
        ("start: [1]\n", r"start: expected seconds"),
    ],
)
def test_bad_spec_windows_are_rejected(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_job_spec(_write(tmp_path, GOOD + extra))
    assert "\n" not in str(info.value)


def test_job_inputs_carry_manifest_windows(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "c.mp4").write_bytes(b"x")
    (tmp_path / "lists" / "extra.csv").write_text("path,start,end\nc.mp4,100f,\n")
    (tmp_path / "incoming").mkdir()
    vids = {v.video_id: v for v in job_inputs(load_job_spec(_write(tmp_path, GOOD)))}
    assert (vids["c"].start, vids["c"].end) == ("100f", None)
