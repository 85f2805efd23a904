"""Devices and precision: the one place a device string becomes a ``torch.device``.

Every stage, trainer, benchmark and command resolves its device here, so ``auto`` means the
same everywhere and a bad string is the same one-line :class:`ConfigError` everywhere:

* ``auto`` -> ``cuda`` when CUDA is available, else ``cpu``;
* ``cpu``, ``cuda``, ``cuda:N`` -> as given, after checking that CUDA (and device N) exists;
* anything else -> :class:`ConfigError` naming the setting and the value.

torch is imported lazily: ``pipeline`` is imported by the CLI before any model code.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from hmrflow.pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Values a device setting may take besides ``cuda:N``.
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when torch can use a CUDA device (False when torch is not importable)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def check_device_string(device: str, what: str = "device") -> str:
    """``device`` normalised (stripped, lower case) if it has a valid form; else ConfigError.

    Checks the form only (``auto``, ``cpu``, ``cuda``, ``cuda:N``), not whether the device
    exists: configs are validated on machines that may not be the ones that run them.
    """
    text = str(device).strip().lower()
    if text in DEVICE_CHOICES:
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise ConfigError(f"{what}: {device!r} is not a device; use auto, cpu, cuda or cuda:N")


def resolve_device(device: Optional[str], what: str = "device") -> "torch.device":
    """The ``torch.device`` a setting names (see module docstring); None means ``auto``.

    Raises :class:`ConfigError` for a malformed string and for a CUDA device on a machine
    without CUDA (or without that many GPUs), naming ``what`` (e.g. ``estimate.device``).
    """
    import torch

    text = check_device_string("auto" if device is None else device, what)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{what}: {text!r} asked for, but CUDA is not available on this machine (use auto or cpu)"
            )
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{what}: {text!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(text)


def autocast_dtype(device: "torch.device", precision: str, cpu_bf16: bool = True) -> "Optional[torch.dtype]":
    """The autocast dtype for ``precision`` (fp32 | bf16 | fp16) on ``device``; None means fp32.

    On CUDA both half types are used as asked.  On the CPU only bf16 has fast kernels, and
    only where ``cpu_bf16`` allows it (inference does; training keeps fp32 on the CPU).
    """
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and precision == "bf16" and cpu_bf16:
        return torch.bfloat16
    return None


@contextmanager
def isolated_torch_state(seed: int = 0) -> Iterator[None]:
    """No gradients and torch's global RNG forked and seeded with ``seed`` for the block.

    Commands that run in-process (tests, notebooks) then leave torch's global state (grad mode,
    RNG) as they found it, and their own random draws reproduce.
    """
    import torch

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
