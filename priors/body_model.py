"""The SMPL body model as a stateless fp32 torch module (a thin wrapper around smplx).

Two sources of the model arrays, one code path (``smplx.SMPLLayer`` built from arrays):

* ``kind="smpl"``: the user's own SMPL files (``SMPL_NEUTRAL.pkl`` etc., or the official
  ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl`` names), read through
  :mod:`hmrflow.priors.safe_pickle` (no chumpy, no code execution);
* ``kind="synthetic"``: the procedural body of :mod:`hmrflow.priors.synthetic_body`,
  generated once (under a second) and cached under ``$HMRFLOW_CACHE`` (default
  ``~/.cache/hmrflow``), keyed by the generator version.

Usage::

    bm = load_body_model("synthetic")
    out = bm(rotmats, betas, transl)      # rotmats (B,24,3,3), betas (B,10), transl (B,3)
    out.vertices, out.joints               # (B,V,3), (B,24,3)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from hmrflow.pipeline.errors import BodyModelError, UnsafeFileError
from hmrflow.priors.rotations import axis_angle_to_matrix

log = logging.getLogger(__name__)

__all__ = [
    "BodyOutput",
    "BodyModel",
    "load_body_model",
    "load_smpl_arrays",
    "find_smpl_file",
    "validate_smpl_arrays",
    "arrays_sha256",
    "synthetic_model_arrays",
    "SMPL_DIR_ENV",
    "CACHE_ENV",
]

SMPL_DIR_ENV = "HMRFLOW_SMPL_DIR"
CACHE_ENV = "HMRFLOW_CACHE"
N_JOINTS = 24
N_BETAS = 10
N_POSE_BASIS = 207
#: SMPL keys the model needs (other keys in a file are ignored)
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
_GENDER_ABBR = {"neutral": "neutral", "male": "m", "female": "f"}
_SMPL_VERTICES = 6890


@dataclass(frozen=True)
class BodyOutput:
    """Posed body: ``vertices`` (B,V,3), ``joints`` (B,24,3) kinematic joints,
    ``extra_joints`` (B,21,3) smplx's vertex keypoints (nose, eyes, ears, feet, finger tips)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    extra_joints: torch.Tensor


# ------------------------------------------------------------------------------- arrays
def validate_smpl_arrays(raw: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Check and normalise SMPL arrays: float64 dense arrays, int64 faces/kintree, 10 betas.

    Raises:
        BodyModelError: a key is missing or has the wrong shape (message names file and key).
    """
    if not isinstance(raw, Mapping):
        raise BodyModelError(f"{source}: not an SMPL model file (expected a dict of arrays, got {type(raw).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise BodyModelError(
            f"{source}: not an SMPL model file: missing key {missing[0]!r} (needs {', '.join(REQUIRED_KEYS)})"
        )
    out: dict[str, np.ndarray] = {}
    try:
        for k in REQUIRED_KEYS:
            val = raw[k]
            if hasattr(val, "toarray"):  # scipy.sparse
                val = val.toarray()
            out[k] = np.asarray(val)
    except (TypeError, ValueError) as exc:
        raise BodyModelError(f"{source}: key {k!r} is not an array ({exc})") from None
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 4:
        raise BodyModelError(f"{source}: key 'v_template' has shape {v.shape}, expected (V,3)")
    n = v.shape[0]
    expect = {
        "shapedirs": (n, 3, None),
        "posedirs": (n, 3, N_POSE_BASIS),
        "J_regressor": (N_JOINTS, n),
        "weights": (n, N_JOINTS),
        "kintree_table": (2, N_JOINTS),
        "f": (None, 3),
    }
    for k, shape in expect.items():
        a = out[k]
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "(" + ",".join("*" if s is None else str(s) for s in shape) + ")"
            raise BodyModelError(f"{source}: key {k!r} has shape {a.shape}, expected {want} for V={n}")
    if out["shapedirs"].shape[2] < N_BETAS:
        raise BodyModelError(
            f"{source}: key 'shapedirs' has {out['shapedirs'].shape[2]} shape directions, needs {N_BETAS}"
        )
    f = out["f"].astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= n):
        raise BodyModelError(f"{source}: key 'f' indexes vertices outside 0..{n - 1}")
    parents = out["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # official files store 4294967295 for the root
    if (parents[1:] < 0).any() or (parents[1:] >= np.arange(1, N_JOINTS)).any():
        raise BodyModelError(f"{source}: key 'kintree_table' is not a tree ordered parents-first")
    res = {k: out[k].astype(np.float64) for k in ("v_template", "posedirs", "J_regressor", "weights")}
    res["shapedirs"] = out["shapedirs"][:, :, :N_BETAS].astype(np.float64)
    res["f"] = f
    res["kintree_table"] = np.stack([parents, np.arange(N_JOINTS)]).astype(np.int64)
    for k, a in res.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise BodyModelError(f"{source}: key {k!r} contains NaN or infinite values")
    return res


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 (hex) of the normalised model arrays: the same model gives the same hash
    whichever file format it came from."""
    h = hashlib.sha256()
    for k in REQUIRED_KEYS:
        a = np.ascontiguousarray(arrays[k], dtype=np.int64 if k in ("f", "kintree_table") else "<f8")
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def find_smpl_file(path: str | os.PathLike[str] | None, gender: str = "neutral") -> Path:
    """Resolve the SMPL file for ``gender`` from a folder or a file path (or ``$HMRFLOW_SMPL_DIR``).

    Accepted names (case-insensitive), in ``path``, ``path/smpl`` or ``path/models``:
    ``SMPL_{NEUTRAL,MALE,FEMALE}.pkl`` and the official
    ``basicModel_{neutral,m,f}_lbs_10_207_0_v1.x.x.pkl``; ``.npz`` with the same stems too.
    """
    if gender not in _GENDER_ABBR:
        raise BodyModelError(f"unknown gender {gender!r}: use neutral, male or female")
    want = f"SMPL_{gender.upper()}.pkl"
    official = f"basicModel_{_GENDER_ABBR[gender]}_lbs_10_207_0_v1.0.0.pkl"
    how = (
        f"download SMPL from https://smpl.is.tue.mpg.de (hmrflow never ships it), put {want} "
        f"(or {official}) in a folder and pass that folder with --body-model / body_model.path "
        f"or set {SMPL_DIR_ENV}"
    )
    if path is None or str(path) == "":
        env = os.environ.get(SMPL_DIR_ENV)
        if not env:
            raise BodyModelError(f"no SMPL model folder given: {how}")
        path = env
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise BodyModelError(f"{p}: no such file or folder; expected {p / want}: {how}")
    stems = {want[:-4].lower(), official[:-10].lower() + "v1.0.0", official[:-10].lower() + "v1.1.0"}
    for folder in (p, p / "smpl", p / "models", p / "smpl" / "models"):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in (".pkl", ".npz") and f.stem.lower() in stems and f.is_file():
                return f
    raise BodyModelError(f"{p}: no {want} (or {official}) in this folder: {how}")


def load_smpl_arrays(file: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read and validate one SMPL model file (``.pkl`` via the safe unpickler, or ``.npz``)."""
    from hmrflow.priors.safe_pickle import load_smpl_pickle

    file = Path(file)
    try:
        if file.suffix.lower() == ".npz":
            with np.load(file, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        else:
            raw = load_smpl_pickle(file)
    except UnsafeFileError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise BodyModelError(f"{file}: cannot read SMPL model file ({exc})") from None
    return validate_smpl_arrays(raw, str(file))


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hmrflow").expanduser()


_MEMO: dict[tuple[Any, ...], dict[str, np.ndarray]] = {}
_MEMO_LOCK = threading.Lock()


def synthetic_model_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The synthetic model's normalised arrays, from the cache or freshly generated (then cached)."""
    from hmrflow.priors import synthetic_body as sb

    key = ("synthetic", sb.GENERATOR_VERSION, seed)
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    file = _cache_dir() / "body_models" / f"synthetic_v{sb.GENERATOR_VERSION}_seed{seed}.npz"
    arrays: Optional[dict[str, np.ndarray]] = None
    if file.exists():
        try:
            arrays = load_smpl_arrays(file)
        except BodyModelError as exc:
            log.warning("ignoring broken cached body model (%s); regenerating", exc)
    if arrays is None:
        arrays = validate_smpl_arrays(sb.make_synthetic_body_model(seed), "synthetic body model")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, file)
        except OSError as exc:
            log.warning("cannot cache the synthetic body model in %s (%s)", file.parent, exc)
    with _MEMO_LOCK:
        _MEMO[key] = arrays
    return arrays


# -------------------------------------------------------------------------------- module
class BodyModel(torch.nn.Module):
    """SMPL forward kinematics + skinning, always in fp32 (autocast is switched off inside).

    Stateless: pose, shape and translation come in; nothing is stored between calls.
    Device and dtype are read from the buffers (move it with ``.to(device)``).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        kind: str = "smpl",
        source: str = "",
        vertex_ids: Optional[Mapping[str, int]] = None,
    ) -> None:
        """``arrays`` as returned by :func:`validate_smpl_arrays` (validated again here)."""
        super().__init__()
        import smplx
        from smplx.utils import Struct

        arrays = validate_smpl_arrays(arrays, source or kind)
        self.kind = kind
        self.source = source
        self._sha256 = arrays_sha256(arrays)
        n = arrays["v_template"].shape[0]
        if vertex_ids is None and n != _SMPL_VERTICES:
            from hmrflow.priors.synthetic_body import guess_vertex_ids

            joints = arrays["J_regressor"] @ arrays["v_template"]
            vertex_ids = guess_vertex_ids(arrays["v_template"], joints)
        struct = Struct(**{k: arrays[k] for k in REQUIRED_KEYS})
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
            self.layer = smplx.SMPLLayer(
                model_path="",
                data_struct=struct,
                num_betas=N_BETAS,
                batch_size=1,
                vertex_ids=dict(vertex_ids) if vertex_ids is not None else None,
            )
        self._faces = arrays["f"].copy()
        self._parents = arrays["kintree_table"][0].copy()

    # ---------------------------------------------------------------- properties
    @property
    def faces(self) -> np.ndarray:
        """(F,3) int64 triangle vertex indices."""
        return self._faces

    @property
    def n_vertices(self) -> int:
        return int(self._faces.max()) + 1 if self.layer.v_template is None else int(self.layer.v_template.shape[0])

    @property
    def parents(self) -> np.ndarray:
        """(24,) int64 parent of each joint, -1 for the root."""
        return self._parents

    @property
    def sha256(self) -> str:
        """Hash of the model arrays (see :func:`arrays_sha256`)."""
        return self._sha256

    @property
    def device(self) -> torch.device:
        return self.layer.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layer.v_template.dtype

    # ---------------------------------------------------------------- forward
    def _prep(self, x: torch.Tensor, name: str, shape_tail: tuple[int, ...], batch: int) -> torch.Tensor:
        x = torch.as_tensor(x, device=self.device).to(torch.float32)
        if tuple(x.shape[1:]) != shape_tail or x.shape[0] != batch:
            raise ValueError(f"{name}: expected shape ({batch},{','.join(map(str, shape_tail))}), got {tuple(x.shape)}")
        return x

    def _betas(self, betas: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        if betas is None:
            return torch.zeros(batch, N_BETAS, device=self.device)
        betas = torch.as_tensor(betas, device=self.device).to(torch.float32)
        if betas.ndim != 2 or betas.shape[0] != batch or betas.shape[1] > N_BETAS:
            raise ValueError(f"betas: expected shape ({batch},{N_BETAS}), got {tuple(betas.shape)}")
        if betas.shape[1] < N_BETAS:  # fewer coefficients: the rest are zero
            betas = torch.nn.functional.pad(betas, (0, N_BETAS - betas.shape[1]))
        return betas

    def forward(
        self, rotmats: torch.Tensor, betas: Optional[torch.Tensor] = None, transl: Optional[torch.Tensor] = None
    ) -> BodyOutput:
        """Posed body from rotation matrices.

        Args:
            rotmats: (B,24,3,3) joint rotations, joint 0 the global orientation.
            betas: (B,10) shape coefficients (fewer columns are zero-padded; None = zeros).
            transl: (B,3) translation added after posing about the root joint, or None.
        Returns:
            :class:`BodyOutput` with vertices (B,V,3) and joints (B,24,3), fp32.
        """
        if rotmats.ndim != 4 or tuple(rotmats.shape[1:]) != (N_JOINTS, 3, 3):
            raise ValueError(f"rotmats: expected shape (B,24,3,3), got {tuple(rotmats.shape)}")
        b = rotmats.shape[0]
        dev = self.device
        with torch.autocast(device_type=dev.type, enabled=False):
            rot = self._prep(rotmats, "rotmats", (N_JOINTS, 3, 3), b)
            be = self._betas(betas, b)
            tr = None if transl is None else self._prep(transl, "transl", (3,), b)
            if b == 0:
                v = torch.zeros(0, self.n_vertices, 3, device=dev)
                return BodyOutput(v, torch.zeros(0, N_JOINTS, 3, device=dev), torch.zeros(0, 21, 3, device=dev))
            out = self.layer(
                betas=be,
                global_orient=rot[:, :1],
                body_pose=rot[:, 1:],
                transl=tr,
                pose2rot=False,
            )
            joints = out.joints
            return BodyOutput(out.vertices, joints[:, :N_JOINTS], joints[:, N_JOINTS:])

    def forward_axis_angle(
        self, poses: torch.Tensor, betas: Optional[torch.Tensor] = None, transl: Optional[torch.Tensor] = None
    ) -> BodyOutput:
        """Same as :meth:`forward` with ``poses`` (B,72) axis-angle (24 joints x 3)."""
        if poses.ndim != 2 or poses.shape[1] != 3 * N_JOINTS:
            raise ValueError(f"poses: expected shape (B,72), got {tuple(poses.shape)}")
        with torch.autocast(device_type=self.device.type, enabled=False):
            p = torch.as_tensor(poses, device=self.device).to(torch.float32)
            rot = axis_angle_to_matrix(p.reshape(-1, N_JOINTS, 3))
        return self.forward(rot, betas, transl)

    def rest_joints(self, betas: Optional[torch.Tensor] = None, batch: Optional[int] = None) -> torch.Tensor:
        """(B,24,3) joints of the shaped body in the rest pose (J0 is the rotation centre).

        ``betas`` (B,10); with ``betas=None`` give ``batch`` (default 1) for the template.
        """
        b = int(betas.shape[0]) if betas is not None else (batch or 1)
        with torch.autocast(device_type=self.device.type, enabled=False):
            be = self._betas(betas, b)
            lay = self.layer
            v_shaped = lay.v_template[None] + torch.einsum("bl,vcl->bvc", be, lay.shapedirs)
            return torch.einsum("jv,bvc->bjc", lay.J_regressor, v_shaped)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, vertices={self.n_vertices}, sha256={self.sha256[:12]}"


# ------------------------------------------------------------------------------- loading
def load_body_model(
    kind: Any = "synthetic",
    path: str | os.PathLike[str] | None = None,
    gender: str = "neutral",
    device: str | torch.device = "cpu",
) -> BodyModel:
    """Build the body model.

    Args:
        kind: ``"synthetic"`` (procedural, cached) or ``"smpl"`` (user files); or a
            ``BodyModelConfig``-like object with ``kind``, ``path`` and ``gender``.
        path: for ``smpl``: a folder with ``SMPL_NEUTRAL.pkl`` etc. or one ``.pkl`` file;
            default ``$HMRFLOW_SMPL_DIR``.
        gender: neutral, male or female (``smpl`` only; the synthetic body is neutral).
        device: torch device for the buffers.
    Raises:
        BodyModelError: files missing or malformed (message says what to put where).
        UnsafeFileError: the pickle contains anything but arrays.
    """
    if not isinstance(kind, str):
        cfg = kind
        kind, path, gender = cfg.kind, getattr(cfg, "path", None), getattr(cfg, "gender", "neutral")
    if kind == "synthetic":
        bm = BodyModel(synthetic_model_arrays(0), kind="synthetic", source="synthetic")
    elif kind == "smpl":
        file = find_smpl_file(path, gender)
        st = file.stat()
        key = ("smpl", str(file.resolve()), st.st_mtime_ns, st.st_size)
        with _MEMO_LOCK:
            arrays = _MEMO.get(key)
        if arrays is None:
            arrays = load_smpl_arrays(file)
            with _MEMO_LOCK:
                _MEMO[key] = arrays
        bm = BodyModel(arrays, kind="smpl", source=str(file))
    else:
        raise BodyModelError(f"unknown body model kind {kind!r}: use 'synthetic' or 'smpl'")
    return bm.to(device)
