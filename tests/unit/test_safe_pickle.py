"""The restricted SMPL unpickler: refuses code, reads numpy/scipy/chumpy data (no chumpy import)."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

from hmrflow.pipeline.errors import UnsafeFileError
from hmrflow.priors.safe_pickle import load_smpl_pickle, loads_smpl_pickle


class _SystemCall:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Evil:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class _Popen:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


class _PlainClass:
    """An arbitrary class (not in the allow-list) instantiated by the pickle."""

    def __init__(self) -> None:
        self.v = 1


def test_os_system_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _SystemCall(f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafeFileError) as err:
        load_smpl_pickle(path)
    assert str(path) in str(err.value)
    assert "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (_Evil("open('MARKER','w')"), "eval"),
        (_Popen(), "Popen"),
        (_PlainClass(), "_PlainClass"),
    ],
)
def test_other_globals_are_refused(tmp_path, payload, refused):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"x": payload}))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UnsafeFileError, match=refused):
            load_smpl_pickle(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_scipy_and_containers_round_trip(protocol):
    data = {
        "v": np.arange(12, dtype=np.float64).reshape(4, 3),
        "f": np.array([[0, 1, 2]], dtype=np.uint32),
        "J_regressor": sp.csc_matrix(np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])),
        "meta": {"bs_style": "lbs", "n": 10, "s": {1, 2}, "t": (1.5, None), "b": b"\x00\xff"},
    }
    out = loads_smpl_pickle(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["v"], data["v"])
    assert out["f"].dtype == np.uint32
    assert sp.issparse(out["J_regressor"]) and out["J_regressor"].format == "csc"
    np.testing.assert_array_equal(out["J_regressor"].toarray(), data["J_regressor"].toarray())
    assert out["meta"] == data["meta"]


def _install_fake_chumpy(monkeypatch):
    """A stand-in ``chumpy.ch`` module whose ``Ch`` pickles like chumpy's (state dict with 'x')."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return Ch


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
def test_chumpy_objects_load_as_numpy_without_chumpy(monkeypatch, tmp_path, protocol):
    Ch = _install_fake_chumpy(monkeypatch)
    arr = np.random.default_rng(0).standard_normal((5, 3, 10))
    blob = pickle.dumps({"shapedirs": Ch(arr), "nested": [Ch([1.0, 2.0])]}, protocol=protocol)
    assert b"chumpy.ch" in blob
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    out = loads_smpl_pickle(blob)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    assert type(out["shapedirs"]) is np.ndarray
    np.testing.assert_array_equal(out["shapedirs"], arr)
    np.testing.assert_array_equal(out["nested"][0], [1.0, 2.0])


# --------------------------------------------------------------- a Python 2 pickle, by opcodes
def _s(b: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
    return b"U" + bytes([len(b)]) + b


def _py2_array(values: np.ndarray) -> bytes:
    """Opcodes a Python 2 NumPy writes for a float64 array (data as a py2 str)."""
    raw = values.astype("<f8").tobytes()
    dtype = (
        b"cnumpy\ndtype\n"
        + _s(b"f8")
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + _s(b"<")
        + b"NNN"
        + b"J"
        + struct.pack("<i", -1) * 1
        + b"J"
        + struct.pack("<i", -1)
        + b"K\x00tb"
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"
        + _s(b"b")
        + b"\x87R"
        + b"(K\x01"
        + b"K"
        + bytes([len(values)])
        + b"\x85"
        + dtype
        + b"\x89"
        + _s(raw)
        + b"tb"
    )


def test_python2_pickle_with_chumpy_and_latin1_array_data():
    values = np.array([1.5, -2.0, 3.25, 1e-300, -7.0])  # raw bytes include non-ASCII
    ch_state = b"}" + _s(b"x") + _py2_array(values) + b"s"
    blob = (
        b"\x80\x02}"
        + _s(b"v_template")
        + _py2_array(values)
        + b"s"
        + _s(b"shapedirs")
        + b"ccopy_reg\n_reconstructor\n(cchumpy.ch\nCh\nc__builtin__\nobject\nNtR"
        + ch_state
        + b"b"
        + b"s."
    )
    out = loads_smpl_pickle(blob, source="basicModel.pkl")
    np.testing.assert_array_equal(out["v_template"], values)
    np.testing.assert_array_equal(out["shapedirs"], values)
    assert "chumpy" not in sys.modules


def test_python2_pickle_refuses_os_system_by_old_module_name(tmp_path):
    marker = tmp_path / "m"
    blob = b"cposix\nsystem\n(" + _s(f"touch {marker}".encode()) + b"tR."
    with pytest.raises(UnsafeFileError, match="posix.system"):
        loads_smpl_pickle(blob, source="x.pkl")
    assert not marker.exists()


def test_corrupt_pickle_is_a_value_error():
    with pytest.raises(ValueError, match="not a readable pickle"):
        loads_smpl_pickle(b"\x80\x02}q\x00(", source="broken.pkl")
