"""Loading and saving weights without ever executing code from a file.

``.safetensors`` files are read with safetensors (no pickle at all); ``.pt`` / ``.pth`` /
``.ckpt`` / ``.bin`` with ``torch.load(weights_only=True, map_location="cpu")``, whose
restricted unpickler refuses anything but tensors and plain containers.  A pickle that
tries to call a function (``__reduce__`` -> ``os.system``) or build arbitrary objects is
rejected with :class:`UnsafeCheckpointError` before any of it runs.  Every failure names
the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from hmrflow.pipeline.atomic import atomic_path, atomic_write_bytes
from hmrflow.pipeline.errors import CheckpointError, UnsafeFileError

log = logging.getLogger(__name__)

SAFETENSORS_EXTS = (".safetensors",)
PICKLE_EXTS = (".pt", ".pth", ".ckpt", ".bin")

# Fragments of torch's weights-only unpickler errors that mean "a well-formed pickle asked for
# something forbidden" (as opposed to bytes that are not a pickle at all).
_FORBIDDEN_MARKERS = re.compile(r"GLOBAL|REDUCE|BUILD|blocked|not an allowed global|safe_globals", re.IGNORECASE)


class UnsafeCheckpointError(CheckpointError, UnsafeFileError):
    """A weights file contains code or objects that are not plain tensors (refused, nothing ran)."""


def _reason_from_weights_only(exc: BaseException) -> str:
    """The informative line of torch's long weights-only error message."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if m:
        return m.group(1).strip().splitlines()[0]
    for line in text.splitlines():
        if _FORBIDDEN_MARKERS.search(line):
            return line.strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (expected a .safetensors/.pt/.pth/.ckpt weights file)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({exc})") from None


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _reason_from_weights_only(exc)
        if _FORBIDDEN_MARKERS.search(reason):
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the file contains code/objects that are not plain tensors "
                f"({reason}); nothing from it was run. If you trust its source, re-save it as a plain "
                "state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
            ) from None
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({reason})") from None
    except Exception as exc:  # the restricted unpickler raises anything (IndexError, KeyError...) on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {first})") from None


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap Lightning's ``{"state_dict": ...}`` and check every value is a tensor."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors, got {type(obj).__name__}")
    bad = [
        f"{k!r} ({type(v).__name__})"
        for k, v in obj.items()
        if not isinstance(v, torch.Tensor) or not isinstance(k, str)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{path}: not a plain state dict: entries that are not named tensors: {shown} "
            f"(top-level keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    return dict(obj)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into ``{name: tensor}`` on the CPU, executing nothing from it.

    Supported: ``.safetensors`` (safetensors), ``.pt``/``.pth``/``.ckpt``/``.bin``
    (``torch.load(weights_only=True)``; a top-level ``state_dict`` entry, as PyTorch
    Lightning writes, is unwrapped).  Raises :class:`CheckpointError` naming the file when
    it is missing, empty, corrupt, of an unknown type or not a flat mapping of tensors, and
    :class:`UnsafeCheckpointError` (a CheckpointError and an UnsafeFileError) when the
    pickle contains code or objects that are not plain tensors.
    """
    p = Path(path)
    _check_file(p)
    ext = p.suffix.lower()
    if ext in SAFETENSORS_EXTS:
        state: Any = _load_safetensors(p)
    elif ext in PICKLE_EXTS:
        state = _load_pickle(p)
    else:
        raise CheckpointError(
            f"{p}: unknown weights file type {ext or '(no extension)'!r}; "
            f"use one of {', '.join(SAFETENSORS_EXTS + PICKLE_EXTS)}"
        )
    out = _as_state_dict(state, p)
    log.debug("%s: loaded %d tensors", p, len(out))
    return out


def _untie(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses shares)."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"cannot save {name!r}: {type(t).__name__} is not a tensor")
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        elif t.numel():
            seen.add(key)
        out[name] = t
    return out


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state`` atomically: safetensors for ``.safetensors``, ``torch.save`` otherwise.

    ``metadata`` (str -> str) is stored in the safetensors header (ignored for pickles).
    The file appears complete under its name or not at all.
    """
    p = Path(path)
    ext = p.suffix.lower()
    tensors = _untie(state)
    if ext in SAFETENSORS_EXTS:
        from safetensors.torch import save

        atomic_write_bytes(p, save(tensors, metadata=dict(metadata) if metadata else None))
    elif ext in PICKLE_EXTS:
        with atomic_path(p) as tmp:
            torch.save(tensors, tmp)
    else:
        raise CheckpointError(f"{p}: unknown weights file type {ext!r}; use .safetensors or .pt")
    return p


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata in a ``.safetensors`` file's header ({} for other files or none).

    A corrupt header also gives {}: :func:`load_state_dict` reports the damage with the file
    name when the weights are read.
    """
    p = Path(path)
    if p.suffix.lower() not in SAFETENSORS_EXTS or not p.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any parse failure means "no readable header"
        log.debug("%s: no readable safetensors header (%s)", p, exc)
        return {}
