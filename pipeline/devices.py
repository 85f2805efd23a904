"""Devices and precision: the one place a device string becomes a ``torch.device``.

Every stage, trainer, benchmark and command resolves its device here, so ``auto`` means the
same everywhere and a bad string is the same one-line :class:`ConfigError` everywhere:

* ``auto`` -> ``cuda`` when CUDA is available, else ``cpu``;
* ``cpu``, ``cuda``, ``cuda:N`` -> as given, after checking that CUDA (and device N) exists;
* anything else -> :class:`ConfigError` naming the setting and the value.

torch is imported lazily: ``pipeline`` is imported by the CLI before any model code.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from hmrflow.pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: CPU feature flags of bf16 dot-product instructions (x86 AVX512-BF16 and AMX-BF16, Arm BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
#: ``1`` / ``0`` overrides the CPU bf16 check (benchmarks and tests of the bf16 path).
CPU_BF16_ENV = "HMRFLOW_CPU_BF16"

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


def _cpu_flags() -> frozenset[str]:
    """Feature flags of the CPU (Linux ``/proc/cpuinfo`` flags / Features, macOS sysctl)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not text and platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=2
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out == "1":
            flags.add("bf16")
    return frozenset(flags)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (:data:`NATIVE_BF16_FLAGS`).

    Without them oneDNN still runs bf16, by converting to fp32 around every product, which
    makes a ViT several times slower than plain fp32 (docs/bench/estimator.md).
    ``HMRFLOW_CPU_BF16=1`` / ``0`` overrides the check.
    """
    env = os.environ.get(CPU_BF16_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    return bool(_cpu_flags() & NATIVE_BF16_FLAGS)


def autocast_dtype(device: "torch.device", precision: str, cpu_bf16: bool = True) -> "Optional[torch.dtype]":
    """The autocast dtype for ``precision`` (fp32 | bf16 | fp16) on ``device``; None means fp32.

    On CUDA both half types are used as asked.  On the CPU only bf16 can be fast, and only on
    CPUs with native bf16 instructions (:func:`cpu_has_native_bf16`; elsewhere fp32 is used,
    with one log line) and where ``cpu_bf16`` allows it (inference does; training keeps fp32
    on the CPU).
    """
    import torch

    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and precision == "bf16" and cpu_bf16:
        if cpu_has_native_bf16():
            return torch.bfloat16
        _note_emulated_bf16()
        return None
    return None


@functools.lru_cache(maxsize=1)
def _note_emulated_bf16() -> None:
    log.info(
        "this CPU has no native bf16 instructions (avx512_bf16, amx_bf16 or Arm bf16): running fp32, "
        "which is faster here than emulated bf16 (%s=1 forces bf16)",
        CPU_BF16_ENV,
    )


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
