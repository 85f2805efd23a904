"""Every run names its weights and body model in the manifest (sha256), and a body-model folder
without SMPL files is refused before anything runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hmrflow.jobs.pipelines import model_files
from hmrflow.pipeline.config import load_config
from hmrflow.pipeline.provenance import model_entry


def test_default_run_names_every_weights_file_and_the_body_model() -> None:
    models = model_files(load_config("clip"))
    assert set(models) == {"detector", "estimator", "motion_prior", "camera_network", "body_model"}
    for name in ("detector", "estimator", "camera_network"):
        p = Path(models[name])
        assert p.is_file(), name
        assert model_entry(p)["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert Path(models["motion_prior"]).is_dir() and model_entry(models["motion_prior"])["kind"] == "directory"
    assert len(models["body_model"]) == 64  # the synthetic body's sha256
    # what the config changes changes the list: no refinement, merged estimator
    other = model_files(load_config("clip", ["refine.enabled=false", "estimate.eclm=true"]))
    assert "motion_prior" not in other and other["estimator"].endswith("estimator_tiny_eclm.safetensors")


def test_empty_body_model_folder_is_a_one_line_error_before_decoding(tmp_path: Path, capsys) -> None:
    from hmrflow.jobs.cli import main
    from tests.videos import make_video

    video = make_video(tmp_path / "clip.mp4", n_frames=4, size=(64, 48)).path
    empty = tmp_path / "smpl"
    empty.mkdir()
    code = main(["run", str(video), "-o", str(tmp_path / "out"), "--body-model", str(empty)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert code == 2 and len(lines) == 1 and str(empty) in lines[0] and "SMPL_NEUTRAL.pkl" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unwritable_output_root_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    import os

    import pytest

    from hmrflow.jobs.cli import main
    from hmrflow.pipeline.atomic import check_output_root
    from hmrflow.pipeline.errors import ConfigError
    from tests.videos import make_video

    video = make_video(tmp_path / "clip.mp4", n_frames=4, size=(64, 48)).path
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code = main(["run", str(video), "-o", str(a_file)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0] and str(a_file) in lines[0]
    assert "internal error" not in lines[0]
    with pytest.raises(ConfigError, match="cannot write outputs here"):  # a folder that cannot be made
        check_output_root(a_file / "out")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root ignores permissions, so this part runs only for others)
            with pytest.raises(ConfigError, match="cannot write outputs here"):
                check_output_root(ro / "out")
    finally:
        os.chmod(ro, 0o700)


def test_run_never_replaces_another_inputs_output(tmp_path: Path) -> None:
    import json

    from hmrflow.pipeline.naming import run_video_id, sanitize_video_id, short_hash

    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    out = tmp_path / "out"
    assert run_video_id(a, out) == "clip"  # nothing there yet
    (out / "clip").mkdir(parents=True)
    (out / "clip" / "manifest.json").write_text(json.dumps({"input": {"path": str(a.resolve())}}))
    assert run_video_id(a, out) == "clip"  # the same input again: its own output is replaced
    assert run_video_id(b, out) == f"clip-{short_hash(str(b.resolve()))}"  # another input with that stem
    (out / "notes").mkdir()
    assert run_video_id(tmp_path / "notes.mp4", out) != sanitize_video_id("notes.mp4")  # not an hmrflow output
