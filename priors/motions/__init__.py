"""Procedural motions in SMPL pose space (see :mod:`hmrflow.priors.motion_library` for the API)."""

from hmrflow.priors.motions.core import Motion

__all__ = ["Motion"]
