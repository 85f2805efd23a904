"""The Stage contract shared by the LocalRunner and the Ray runner.

A stage is a class with cheap, picklable ``__init__(cfg)`` (no weights, no devices),
``setup()`` called once per worker (load weights, resolve ``device="auto"``), and
``__call__(x)`` with no hidden state carried between calls.  ``resources`` declares
what one worker needs; the Ray runner uses it to pick actors (stages that have a
``setup`` or need GPUs) or tasks (everything else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar, runtime_checkable

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs."""

    cpus: float = 1.0
    gpus: float = 0.0


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

    def needs_actor(self) -> bool:
        """True when a Ray worker should keep this stage alive (weights or GPUs)."""
        return type(self).setup is not BaseStage.setup or self.resources.gpus > 0
