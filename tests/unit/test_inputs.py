"""INPUT enumeration: folders, globs, CSV/Parquet manifests, ids and metadata."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hmrflow.jobs.batch.inputs import InputError, enumerate_inputs


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folder_is_searched_recursively_by_extension(tmp_path: Path) -> None:
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "sub" / "deep" / "B.MOV")
    _touch(tmp_path / "sub" / "notes.txt")
    _touch(tmp_path / "._a.mp4")  # macOS resource fork
    _touch(tmp_path / ".cache" / "c.mp4")  # hidden folder
    vids = enumerate_inputs(tmp_path)
    assert [(v.video_id, Path(v.path).name) for v in vids] == [("a", "a.mp4"), ("B", "B.MOV")]
    assert all(Path(v.path).is_absolute() for v in vids)


def test_same_stem_in_two_folders_gets_distinct_ids(tmp_path: Path) -> None:
    _touch(tmp_path / "day1" / "clip.mp4")
    _touch(tmp_path / "day2" / "clip.mp4")
    ids = [v.video_id for v in enumerate_inputs(tmp_path)]
    assert len(set(ids)) == 2 and all(i.startswith("clip-") for i in ids)


def test_reserved_name_is_never_a_video_id(tmp_path: Path) -> None:
    _touch(tmp_path / "_job.mp4")
    (v,) = enumerate_inputs(tmp_path)
    assert v.video_id == "job"  # derived ids never start with "_"
    (tmp_path / "m.csv").write_text("path,video_id\n_job.mp4,_JOB\n")
    with pytest.raises(InputError, match="not a safe id"):
        enumerate_inputs(tmp_path / "m.csv")


def test_glob_matches_files_whatever_the_extension(tmp_path: Path) -> None:
    _touch(tmp_path / "x" / "a.mp4")
    _touch(tmp_path / "x" / "y" / "b.mp4")
    _touch(tmp_path / "x" / "y" / "c.bin")
    assert [v.video_id for v in enumerate_inputs(str(tmp_path / "x" / "**" / "*.mp4"))] == ["a", "b"]
    assert [v.video_id for v in enumerate_inputs(str(tmp_path / "x" / "y" / "c.*"))] == ["c"]


def test_csv_manifest_with_relative_paths_and_metadata(tmp_path: Path) -> None:
    _touch(tmp_path / "v" / "p1.mp4")
    (tmp_path / "list.csv").write_text("path,subject,session,score\nv/p1.mp4,S01,2,0.5\n/abs/missing.mp4,S02,,\n")
    vids = {v.video_id: v for v in enumerate_inputs(tmp_path / "list.csv")}
    assert set(vids) == {"p1", "missing"}
    assert vids["p1"].path == str(tmp_path / "v" / "p1.mp4")
    assert vids["p1"].metadata == {"subject": "S01", "session": 2.0, "score": 0.5}
    assert vids["missing"].metadata == {"subject": "S02", "session": None, "score": None}  # kept: fails later, visibly


def test_parquet_manifest_with_given_ids(tmp_path: Path) -> None:
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "b.mp4")
    pd.DataFrame(
        {"path": [str(tmp_path / "a.mp4"), "b.mp4"], "video_id": ["walk_01", None], "age": [71, 64]}
    ).to_parquet(tmp_path / "m.parquet")
    vids = {v.video_id: v for v in enumerate_inputs(tmp_path / "m.parquet")}
    assert set(vids) == {"walk_01", "b"}
    assert vids["walk_01"].metadata == {"age": 71}


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "nopath.csv").write_text("file,x\na.mp4,1\n")
    with pytest.raises(InputError, match=r"nopath.csv: manifest has no 'path' column \(columns: file, x\)"):
        enumerate_inputs(tmp_path / "nopath.csv")
    (tmp_path / "dup.csv").write_text("path,video_id\na.mp4,same\nb.mp4,same\n")
    with pytest.raises(InputError, match="given to two files"):
        enumerate_inputs(tmp_path / "dup.csv")
    (tmp_path / "unsafe.csv").write_text("path,video_id\na.mp4,../etc\n")
    with pytest.raises(InputError, match="not a safe id"):
        enumerate_inputs(tmp_path / "unsafe.csv")
    with pytest.raises(InputError, match="manifest not found"):
        enumerate_inputs(tmp_path / "absent.csv")


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files found"):
        enumerate_inputs(tmp_path / "empty")
    with pytest.raises(InputError, match="matches no files"):
        enumerate_inputs(str(tmp_path / "*.mkv"))
    with pytest.raises(InputError, match="no such file or folder"):
        enumerate_inputs(tmp_path / "nope")


def test_single_file_input(tmp_path: Path) -> None:
    (v,) = enumerate_inputs(_touch(tmp_path / "My Clip (1).mp4"))
    assert v.video_id == "My_Clip_1"


def test_hmrflow_outputs_inside_the_input_folder_are_not_inputs(tmp_path: Path) -> None:
    import json

    _touch(tmp_path / "walk.mp4")
    out = tmp_path / "out" / "walk"
    _touch(out / "overlay.mp4")  # hmrflow render's overlay next to the outputs
    _touch(out / "exports" / "clip.mov")
    (out / "manifest.json").write_text(json.dumps({"format": "hmrflow.output"}))
    _touch(tmp_path / "other" / "keep.mp4")
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something else"}))
    assert sorted(Path(v.path).name for v in enumerate_inputs(tmp_path)) == ["keep.mp4", "walk.mp4"]


def test_manifest_start_end_columns_are_each_videos_window(tmp_path: Path) -> None:
    for n in ("a", "b", "c", "d"):
        _touch(tmp_path / f"{n}.mp4")
    (tmp_path / "list.csv").write_text(
        "path,start,end,subject\na.mp4,12.5,20s,S1\nb.mp4,300f,450f,S2\nc.mp4,,,S3\nd.mp4,2,,S4\n"
    )
    vids = {v.video_id: v for v in enumerate_inputs(tmp_path / "list.csv")}
    assert {k: (v.start, v.end) for k, v in vids.items()} == {
        "a": ("12.5s", "20s"),
        "b": ("300f", "450f"),
        "c": (None, None),  # empty cells: the job's --start/--end apply
        "d": ("2s", None),
    }
    assert vids["a"].metadata == {"subject": "S1"}  # window columns are not metadata
    assert not vids["c"].window.is_set and vids["d"].window.start is not None
    # Parquet: numbers and text alike
    pd.DataFrame({"path": ["a.mp4", "b.mp4"], "start": [1.5, None], "end": ["90f", None]}).to_parquet(
        tmp_path / "m.parquet"
    )
    vids = {v.video_id: v for v in enumerate_inputs(tmp_path / "m.parquet")}
    assert (vids["a"].start, vids["a"].end, vids["b"].start, vids["b"].end) == ("1.5s", "90f", None, None)


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.mp4,1.2x,", r"list\.csv: row 1: 'start' '1\.2x': expected seconds \(12\.5 or 12\.5s\) or a frame number"),
        ("a.mp4,,-3", r"list\.csv: row 1: 'end' -3: must not be negative"),
        ("a.mp4,1,2\nb.mp4,5s,3s", r"list\.csv: row 2: end 3s must be after start 5s"),
        ("a.mp4,10.5f,", r"list\.csv: row 1: 'start' '10\.5f': a frame number must be a whole number"),
    ],
)
def test_bad_window_cells_name_the_manifest_row_and_column(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "list.csv").write_text("path,start,end\n" + rows + "\n")
    with pytest.raises(InputError, match=message) as info:
        enumerate_inputs(tmp_path / "list.csv")
    assert "\n" not in str(info.value)


def test_job_window_fills_empty_cells_and_must_leave_frames(tmp_path: Path) -> None:
    from hmrflow.jobs.batch.inputs import check_windows
    from hmrflow.pipeline.window import Window

    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "b.mp4")
    (tmp_path / "list.csv").write_text("path,start,end\na.mp4,5s,\nb.mp4,,\n")
    vids = enumerate_inputs(tmp_path / "list.csv")
    check_windows(vids, Window.parse(None, "10s"))  # a: [5 s, 10 s), b: [start, 10 s)
    with pytest.raises(InputError, match=r"a\.mp4: time window from the manifest and --start/--end: end 3s must be"):
        check_windows(vids, Window.parse(None, "3s"))
