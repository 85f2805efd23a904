"""C3D marker files through ezc3d (``pip install ezc3d``; wheels exist for CPython 3.11).

Same markers, axes and units as the ``.trc`` export (:mod:`hmrflow.jobs.export.trc`):
Y-up (``diag(1, -1, -1)`` applied to camera-frame points), millimetres (``POINT:UNITS`` =
"mm"), ``POINT:RATE`` = the track's median frame rate.  C3D stores uniformly sampled
frames: rows are the track's frames in order (the exact per-frame timestamps are in the
``.trc``/``.csv``).  Without ezc3d the format raises a clear
:class:`~hmrflow.pipeline.errors.HmrflowError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hmrflow.jobs.export.trc import camera_to_yup_points
from hmrflow.pipeline.errors import HmrflowError


class MissingDependencyError(HmrflowError):
    """An optional package an export format needs is not installed."""


def ezc3d_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ezc3d") is not None


def write_c3d(
    path: str | Path, names: Sequence[str], positions_cam: np.ndarray, rate: float, first_frame: int = 0
) -> Path:
    """Write (T, M, 3) camera-frame metre positions as a C3D file (mm, Y-up).

    Raises:
        MissingDependencyError: ezc3d is not installed.
    """
    if not ezc3d_available():
        raise MissingDependencyError(f"{path}: the c3d format needs ezc3d: pip install ezc3d")
    import ezc3d

    pos = camera_to_yup_points(positions_cam) * 1000.0  # (T, M, 3) mm
    t, m = pos.shape[:2]
    data = np.ones((4, m, t), np.float64)
    data[:3] = pos.transpose(2, 1, 0)
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = [float(rate)]
    c["parameters"]["POINT"]["LABELS"]["value"] = list(names)
    c["parameters"]["POINT"]["UNITS"]["value"] = ["mm"]
    c["data"]["points"] = data
    c["header"]["points"]["first_frame"] = int(first_frame)
    path = Path(path)
    c.write(str(path))
    return path
