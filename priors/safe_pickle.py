"""A restricted unpickler for SMPL model files.

SMPL ``.pkl`` files are Python pickles, and a pickle can run any code when it is loaded.
:func:`load_smpl_pickle` admits only what such files contain:

* NumPy arrays, dtypes and scalars (Python 2 and 3 pickles, NumPy 1 and 2 module names);
* ``scipy.sparse`` CSC/CSR matrices (the official ``J_regressor``), rebuilt from their
  raw ``data/indices/indptr`` so that any SciPy version reads them;
* builtin containers and scalars (dict, list, tuple, set, str, bytes, int, float, ...);
* chumpy objects (``chumpy.ch.Ch`` and friends: the official ``shapedirs``), mapped to
  plain NumPy arrays **without importing chumpy** (chumpy does not work on Python 3.11
  with NumPy 2).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary
classes) raises :class:`~hmrflow.pipeline.errors.UnsafeFileError` naming the file and
the refused global, before anything is called.
"""

from __future__ import annotations

import copyreg
import io
import logging
import os
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np

from hmrflow.pipeline.errors import UnsafeFileError

log = logging.getLogger(__name__)

__all__ = ["load_smpl_pickle", "loads_smpl_pickle", "ChumpyArray", "SparseMatrixState"]


class ChumpyArray:
    """Stand-in for a chumpy object: keeps the state, yields the array it holds.

    A pickled ``chumpy.ch.Ch`` carries its value as the ``x`` entry of its state dict;
    simple derived nodes keep their input under ``a`` (e.g. ``Reshape``/``transpose``).
    """

    chumpy_class = "chumpy.ch.Ch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pickle may call __new__ only
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slotstate) form
        self.state = dict(state) if isinstance(state, dict) else {"x": state}

    def to_numpy(self) -> np.ndarray:
        """The array this chumpy node stands for.

        Raises ``ValueError`` for chumpy expressions that need chumpy to evaluate.
        """
        st = {k: _to_plain(v) for k, v in getattr(self, "state", {}).items() if k in ("x", "a", "newshape", "axes")}
        if isinstance(st.get("x"), np.ndarray) or np.isscalar(st.get("x")):
            return np.asarray(st["x"])
        a = st.get("a")
        if isinstance(a, np.ndarray):
            if "newshape" in st:
                return a.reshape(st["newshape"])
            if "axes" in st:
                return np.transpose(a, st["axes"])
            if self.chumpy_class.rsplit(".", 1)[-1] in ("Ch",):
                return a
        raise ValueError(
            f"chumpy object {self.chumpy_class} holds no plain array (keys {sorted(getattr(self, 'state', {}))})"
        )


class SparseMatrixState:
    """Stand-in for a pickled ``scipy.sparse`` CSC/CSR matrix (state read, class not run)."""

    fmt = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}

    def to_scipy(self) -> Any:
        """Rebuild a ``scipy.sparse.csc_matrix`` / ``csr_matrix`` from data/indices/indptr."""
        import scipy.sparse as sp

        st = getattr(self, "state", {})
        shape = st.get("_shape", st.get("shape"))
        try:
            data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
        except KeyError as exc:
            raise ValueError(f"sparse matrix state lacks {exc.args[0]!r}") from None
        cls = sp.csr_matrix if st.get("format", self.fmt) == "csr" else sp.csc_matrix
        return cls((data, indices, indptr), shape=tuple(int(s) for s in shape))


def _make_standin(base: type, label: str, **attrs: Any) -> type:
    """A subclass of ``base`` remembering which pickled class (``label``) it replaces."""
    return type(base.__name__, (base,), {"chumpy_class": label, **attrs})


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """NumPy globals that array pickles name, under NumPy 1 and NumPy 2 module names."""
    try:  # NumPy 2
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = ma._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = ma.scalar
        if hasattr(nm, "_frombuffer"):
            table[(f"{mod}.numeric", "_frombuffer")] = nm._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    # numpy.dtype subclasses (NumPy 2 pickles dtypes as numpy.dtypes.Float64DType etc.)
    import numpy.dtypes as npd

    for name in dir(npd):
        obj = getattr(npd, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            table[("numpy.dtypes", name)] = obj
    return table


_BUILTINS: dict[str, Any] = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "bool",
        "object",
        "slice",
        "range",
    )
}

#: chumpy classes seen in SMPL-family files (value read from their state, never executed)
_CHUMPY_CLASSES: tuple[tuple[str, str], ...] = (
    ("chumpy.ch", "Ch"),
    ("chumpy", "Ch"),
    ("chumpy.reordering", "Reshape"),
    ("chumpy.reordering", "transpose"),
    ("chumpy.reordering", "Transpose"),
)
_SPARSE_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (mod, f"{fmt}_{kind}")
    for mod_fmt in ("csc", "csr")
    for fmt in (mod_fmt,)
    for kind in ("matrix", "array")
    for mod in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}")
)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    table.update(_numpy_globals())
    for name, obj in _BUILTINS.items():
        table[("builtins", name)] = obj
        table[("__builtin__", name)] = obj
    table[("__builtin__", "unicode")] = str
    table[("__builtin__", "long")] = int
    table[("collections", "OrderedDict")] = OrderedDict
    # Python 3 pickles of bytes at protocol < 3: _codecs.encode(str, "latin1") (no code runs)
    table[("_codecs", "encode")] = _latin1_encode
    # copyreg._reconstructor only instantiates the (allow-listed) class it is given
    table[("copyreg", "_reconstructor")] = _safe_reconstructor
    table[("copy_reg", "_reconstructor")] = _safe_reconstructor
    for mod, name in _CHUMPY_CLASSES:
        table[(mod, name)] = _make_standin(ChumpyArray, f"{mod}.{name}")
    for mod, name in _SPARSE_CLASSES:
        table[(mod, name)] = _make_standin(SparseMatrixState, f"{mod}.{name}", fmt=name[:3])
    return table


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` limited to the text codecs pickles use for bytes."""
    if encoding.lower().replace("-", "") not in ("latin1", "latin_1", "iso88591", "ascii", "utf8"):
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return text.encode(encoding)


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to plain ``object``/builtin bases."""
    if base is object:
        return object.__new__(cls)
    if base in _BUILTINS.values():
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]
    raise pickle.UnpicklingError(f"refused base class {base!r}")


_ALLOWED: dict[tuple[str, str], Any] | None = None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` answers only from the allow-list."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1", fix_imports=True)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafeFileError(
                f"{self.source}: refused to load: the pickle asks for {module}.{name}, which a body "
                "model file never contains (only numpy/scipy.sparse/chumpy arrays and plain containers "
                "are allowed)"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.source}: refused to load: the pickle uses persistent ids")


def _to_plain(obj: Any, _depth: int = 0) -> Any:
    """Replace stand-ins (chumpy, sparse) by NumPy arrays / SciPy matrices, recursively."""
    if _depth > 50:
        return obj
    if isinstance(obj, ChumpyArray):
        return obj.to_numpy()
    if isinstance(obj, SparseMatrixState):
        return obj.to_scipy()
    if isinstance(obj, dict):
        return (
            type(obj)((k, _to_plain(v, _depth + 1)) for k, v in obj.items())
            if isinstance(obj, OrderedDict)
            else {k: _to_plain(v, _depth + 1) for k, v in obj.items()}
        )
    if isinstance(obj, list):
        return [_to_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(v, _depth + 1) for v in obj)
    return obj


def loads_smpl_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; chumpy/sparse stand-ins become arrays.

    Args:
        data: the pickle bytes (Python 2 or 3, any protocol).
        source: the file name used in error messages.
    Raises:
        UnsafeFileError: the pickle names a global outside the allow-list.
        ValueError: the pickle is corrupt or a chumpy node cannot be turned into an array.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, ImportError, IndexError, KeyError) as exc:
        raise ValueError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    return _to_plain(obj)


def load_smpl_pickle(path: str | os.PathLike[str]) -> Any:
    """Read an SMPL-style ``.pkl`` file safely (see module docstring)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    return loads_smpl_pickle(data, source=path)


def allowed_global_names() -> list[str]:
    """``module.name`` of every global the unpickler admits (for docs and tests)."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return sorted(f"{m}.{n}" for m, n in _ALLOWED)
