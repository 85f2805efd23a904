"""Weights loading that never runs code from a file, and atomic saving."""

from __future__ import annotations

import os
import pickle
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import torch

from hmrflow.pipeline.checkpoints import UnsafeCheckpointError, load_state_dict, save_state_dict
from hmrflow.pipeline.errors import CheckpointError, UnsafeFileError


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.arange(4, dtype=torch.float32),
        "steps": torch.tensor(7, dtype=torch.int64),
        "half": torch.randn(2, 2, generator=g).to(torch.bfloat16),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert b[k].device.type == "cpu"


@pytest.mark.parametrize("ext", [".safetensors", ".pt", ".pth", ".ckpt"])
def test_round_trip(tmp_path: Path, ext: str) -> None:
    path = save_state_dict(_state(), tmp_path / f"w{ext}")
    _assert_same(_state(), load_state_dict(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"w{ext}"]  # no temporaries


def test_safetensors_metadata_and_shared_tensors(tmp_path: Path) -> None:
    from safetensors import safe_open

    w = torch.randn(3, 3)
    path = save_state_dict({"a": w, "tied": w, "view": w[0]}, tmp_path / "w.safetensors", metadata={"model": "tiny"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"model": "tiny"}
    out = load_state_dict(path)
    assert torch.equal(out["a"], w) and torch.equal(out["tied"], w) and torch.equal(out["view"], w[0])


def test_lightning_state_dict_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "state_dict": _state(), "optimizer_states": [{"lr": 0.1}]}, path)
    _assert_same(_state(), load_state_dict(path))


def test_non_tensor_entries_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"mixed\.pt.*'epoch' \(int\)"):
        load_state_dict(path)
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt.*mapping"):
        load_state_dict(tmp_path / "list.pt")


class _Payload:
    """Pickles to ``os.system("touch MARKER")``: runs code on any unrestricted unpickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_payload_really_runs_without_protection(tmp_path: Path) -> None:
    """Control: the payload used below is live (so its absence below means it was refused)."""
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("how", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_refused_and_nothing_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if how == "torch_zip":
        torch.save({"weight": torch.ones(2), "x": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "code/objects that are not plain tensors" in msg
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, UnsafeFileError)
    assert not marker.exists()


def test_missing_empty_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint file not found"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors: checkpoint file is empty"):
        load_state_dict(tmp_path / "empty.safetensors")
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"d\.pt: not a file"):
        load_state_dict(tmp_path / "d.pt")


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_truncated_and_garbage_files(tmp_path: Path, ext: str) -> None:
    good = save_state_dict(_state(), tmp_path / f"good{ext}")
    data = good.read_bytes()
    (tmp_path / f"trunc{ext}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"junk{ext}").write_bytes(b"this is not a checkpoint at all " * 8)
    for name in (f"trunc{ext}", f"junk{ext}"):
        with pytest.raises(CheckpointError, match=re.escape(name) + ": corrupt") as info:
            load_state_dict(tmp_path / name)
        assert not isinstance(info.value, UnsafeFileError)


def test_zip_with_bad_member_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        load_state_dict(path)


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"w\.h5: unknown weights file type '\.h5'"):
        load_state_dict(tmp_path / "w.h5")
    with pytest.raises(CheckpointError, match="unknown weights file type"):
        save_state_dict(_state(), tmp_path / "w.h5")


def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_state_dict({"a": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError):
        save_state_dict({"a": torch.ones(2), "b": "not a tensor"}, path)  # type: ignore[dict-item]
    assert torch.equal(load_state_dict(path)["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
