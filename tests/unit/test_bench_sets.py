"""Named benchmark sets: base-seed override, joint layout choices, folder names, CLI wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hmrflow.jobs import cli
from hmrflow.jobs.synth.bench_sets import BENCH_SETS, load_bench_set, set_dir_name
from hmrflow.jobs.synth.scene import SceneSpec
from hmrflow.pipeline.errors import ConfigError


def test_default_seed_and_names_unchanged() -> None:
    specs = load_bench_set("crowded", n_clips=3)
    assert [s.name for s in specs] == ["crowded_000", "crowded_001", "crowded_002"]
    assert [s.seed for s in specs] == [2000, 2001, 2002]


def test_seed_override_gives_fresh_named_clips() -> None:
    specs = load_bench_set("crowded", n_clips=3, seed=91000)
    assert [s.name for s in specs] == ["crowded_s91000_000", "crowded_s91000_001", "crowded_s91000_002"]
    assert [s.seed for s in specs] == [91000, 91001, 91002]
    assert {s.people for s in specs} <= {4, 5, 6}  # same kind of clips: the file's choices
    # the per-clip draws follow the base seed: same seed, same specs
    again = load_bench_set("crowded", n_clips=3, seed=91000)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in specs]


def test_per_clip_choices_follow_the_base_seed() -> None:
    draws = {tuple((s.people, s.camera) for s in load_bench_set("crowded", n_clips=8, seed=k)) for k in range(6)}
    assert len(draws) > 1


def test_set_dir_name() -> None:
    assert set_dir_name("twins") == "twins"
    assert set_dir_name("twins", 7) == "twins_s7"
    assert set_dir_name("/some/where/mine.yaml", 3) == "mine_s3"


def test_every_named_set_loads_with_its_clip_count() -> None:
    for name in BENCH_SETS:
        assert load_bench_set(name), name
    assert len(load_bench_set("crossings")) == 6 and len(load_bench_set("twins")) == 6
    assert all(4.0 <= s.seconds <= 6.0 for s in load_bench_set("crossings"))


def test_joint_choice_sets_several_fields_together(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(
        "name: mine\nn_clips: 12\nseed: 3\nspec: {walkers: 1.0}\n"
        "choices:\n  layout:\n    - {people: 2, cross_pairs: 1}\n    - {people: 5, groups: 1, cross_pairs: 1}\n"
    )
    specs = load_bench_set(str(f))
    got = {(s.people, s.cross_pairs, s.groups) for s in specs}
    assert got == {(2, 1, 0), (5, 1, 1)}


def test_bad_choices_are_one_line_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nchoices: {layout: [2, 3]}\n")
    with pytest.raises(ConfigError, match="choices.layout is not a SceneSpec field"):
        load_bench_set(str(f))
    f.write_text("name: bad\nchoices: {layout: [{people: 2, crowd: 1}]}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_bench_set(str(f))
    with pytest.raises(ConfigError, match="number of clips"):
        load_bench_set("easy", n_clips=-1)


def test_scene_spec_checks_structured_people() -> None:
    with pytest.raises(ConfigError, match="people=3 is fewer than the 5"):
        SceneSpec(people=3, cross_pairs=1, groups=1, group_size=(2, 3))
    with pytest.raises(ConfigError, match="group_gap"):
        SceneSpec(people=3, groups=1, group_gap=(0.8, 0.5))
    with pytest.raises(ConfigError, match="group_size"):
        SceneSpec(people=3, groups=1, group_size=(1, 3))
    assert SceneSpec(people=5, cross_pairs=1, groups=1).structured_people == 5


class _RenderCalls(list):
    """(clip name, seed, set folder) of every render, with the frame sizes in ``sizes``."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []


@pytest.fixture
def fake_render(monkeypatch: pytest.MonkeyPatch) -> _RenderCalls:
    """Replace rendering by a record of (clip name, seed, set folder); writes the files a
    rendered clip has so that reuse checks see them."""
    import hmrflow.jobs.synth.clip as clip_mod

    calls = _RenderCalls()
    sizes = calls.sizes

    def render_clip(spec: SceneSpec, out_dir, body=None, **_: object) -> Path:
        calls.append((spec.name, spec.seed, Path(out_dir)))
        sizes.append((spec.width, spec.height))
        d = Path(out_dir) / spec.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "gt.npz").write_bytes(b"")
        (d / f"{spec.name}.mp4").write_bytes(b"")
        return d

    monkeypatch.setattr(clip_mod, "render_clip", render_clip)
    monkeypatch.setattr(clip_mod, "load_body_assets", lambda *a, **k: None)
    return calls


def test_cli_synth_bench_seed_writes_its_own_folder(tmp_path: Path, fake_render) -> None:
    assert cli.main(["synth", str(tmp_path), "--bench", "twins", "--clips", "2", "--seed", "42"]) == 0
    assert fake_render == [
        ("twins_s42_000", 42, tmp_path / "twins_s42"),
        ("twins_s42_001", 43, tmp_path / "twins_s42"),
    ]
    fake_render.clear()
    assert cli.main(["synth", str(tmp_path), "--bench", "twins", "--clips", "1"]) == 0
    assert fake_render == [("twins_000", 6000, tmp_path / "twins")]


def test_cli_synth_rejects_unknown_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["synth", str(tmp_path), "--bench", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_bench_pipeline_seed_renders_and_names_separately(tmp_path: Path, fake_render) -> None:
    from hmrflow.jobs.bench import pipeline

    a = pipeline.render_set("crossings", 1, tmp_path, seed=9)
    b = pipeline.render_set("crossings", 1, tmp_path)
    assert (a.name, b.name) == ("crossings_s9", "crossings")
    assert [c[:2] for c in fake_render] == [("crossings_s9_000", 9), ("crossings_000", 5000)]
    fake_render.clear()
    pipeline.render_set("crossings", 1, tmp_path, seed=9)  # already there: reused
    assert fake_render == []
    assert pipeline.set_seed("crossings", None) == 5000 and pipeline.set_seed("crossings", 9) == 9
    parser = argparse.ArgumentParser()
    pipeline.add_arguments(parser)
    args = parser.parse_args(["--sets", "crossings", "twins", "--seed", "77"])
    assert args.seed == 77 and args.sets == ["crossings", "twins"]


def test_bench_pipeline_size_renders_the_same_scenes_at_that_size(tmp_path: Path, fake_render) -> None:
    from hmrflow.jobs.bench import pipeline

    a = pipeline.render_set("easy", 1, tmp_path, seed=9, size=(1920, 1080))
    assert a.name == "easy_s9_1920x1080"
    assert [c[:2] for c in fake_render] == [("easy_s9_000", 9)]  # the same scene (name, seed) as at 640x480
    assert fake_render.sizes == [(1920, 1080)]
    parser = argparse.ArgumentParser()
    pipeline.add_arguments(parser)
    assert parser.parse_args(["--size", "1920x1080"]).size == (1920, 1080)
    for bad in ("1920", "axb", "10x10", "100000x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            pipeline.parse_size(bad)


def test_bench_pipeline_stage_shares_split_the_clip_time() -> None:
    from hmrflow.jobs.bench.pipeline import stage_shares

    shares = stage_shares(
        {
            "DecodeStage": 1.0,
            "DetectStage": 4.0,
            "EstimateStage": 2.0,
            "TrackStage": 0.5,
            "to_sequences": 0.5,
            "RefineStage": 0.5,
            "CameraObserver": 0.25,
            "WorldStage": 0.25,
            "decode_wait": 0.1,
            "total": 10.0,
        }
    )
    assert shares["detect_pct"] == pytest.approx(40.0) and shares["track_pct"] == pytest.approx(10.0)
    assert shares["camera_pct"] == pytest.approx(5.0) and shares["write_pct"] == pytest.approx(10.0)
    assert sum(shares.values()) == pytest.approx(100.0)
