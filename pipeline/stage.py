"""The Stage contract shared by the LocalRunner and the Ray runner.

A stage is a class with cheap, picklable ``__init__(cfg)`` (no weights, no devices),
``setup()`` called once per worker (load weights, resolve ``device="auto"``), and
``__call__(x)`` with no hidden state carried between calls.

``resources`` declares what one worker of the stage needs: ``cpus``, and ``gpus``, the share
of one GPU it takes *when it runs on a GPU*.  A model stage also says which device it is
configured for (:meth:`BaseStage.device_setting`: ``auto``, ``cpu``, ``cuda``, ``cuda:N``;
None for stages without a model).  The Ray runner reads both (see
:func:`hmrflow.pipeline.assembly.plan_resources`): a stage set to ``cpu`` asks for no GPU, one
set to ``cuda`` asks for its share, and ``auto`` asks for it when the cluster has GPUs.  Stages
with a ``setup`` or a GPU run as actors (kept alive with their weights), the others as tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar, runtime_checkable

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs: CPUs, and the share of one GPU when it runs on a GPU."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"resources must be >= 0, got cpus={self.cpus}, gpus={self.gpus}")


@runtime_checkable
class Stage(Protocol[In, Out]):
    """Protocol every hmrflow stage satisfies (see module docstring)."""

    resources: ClassVar[Resources]

    def setup(self) -> None: ...

    def __call__(self, x: In) -> Out: ...


class BaseStage(Generic[In, Out]):
    """Convenience base: no-op ``setup`` and a ``ready`` flag for stages that need it."""

    resources: ClassVar[Resources] = Resources()

    def __init__(self) -> None:
        self._ready = False

    def setup(self) -> None:
        self._ready = True

    def ensure_setup(self) -> None:
        """Call ``setup()`` if nobody did (handy for direct use in notebooks/tests)."""
        if not self._ready:
            self.setup()
            self._ready = True

    def device_setting(self) -> str | None:
        """The device the stage is configured for (``auto``, ``cpu``, ``cuda``, ``cuda:N``), or
        None for a stage that runs no model (it never asks for a GPU)."""
        cfg = getattr(self, "cfg", None)
        dev = getattr(cfg, "device", None)
        return str(dev) if dev is not None else None

    def needs_actor(self) -> bool:
        """True when a Ray worker should keep this stage alive (weights or GPUs)."""
        return type(self).setup is not BaseStage.setup or self.resources.gpus > 0
