"""Joint angles as an OpenSim storage file (``.mot``) or a spreadsheet (``.csv``).

``.mot``::

    <name>
    version=1
    nRows=<T>
    nColumns=<1 + number of angles>
    inDegrees=yes
    endheader
    time  pelvis_tilt  pelvis_list ...      (tab-separated, one row per frame)

``time`` is the frame's ``pts`` in seconds.  The ``.csv`` has the same angle columns after
``time``, ``frame_idx`` and ``observed`` (1 = the person was detected, 0 = filled).
Angle names, axes and signs: :mod:`hmrflow.jobs.export.angles` and docs/exports.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


def write_mot(path: str | Path, pts: np.ndarray, angles: Mapping[str, np.ndarray], name: str | None = None) -> Path:
    """Write an OpenSim storage file of angles in degrees (columns in ``angles``' order)."""
    path = Path(path)
    cols = list(angles)
    t = len(pts)
    lines = [
        name or path.stem,
        "version=1",
        f"nRows={t}",
        f"nColumns={len(cols) + 1}",
        "inDegrees=yes",
        "endheader",
        "time\t" + "\t".join(cols),
    ]
    data = (
        np.column_stack([np.asarray(pts, np.float64)] + [np.asarray(angles[c], np.float64) for c in cols])
        if t
        else np.zeros((0, len(cols) + 1))
    )
    for row in data:
        lines.append("\t".join("%.6f" % v for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_angles_csv(
    path: str | Path, pts: np.ndarray, frame_idx: np.ndarray, observed: np.ndarray, angles: Mapping[str, np.ndarray]
) -> Path:
    """Write ``time, frame_idx, observed, <angles...>`` as CSV (degrees, seconds)."""
    import pandas as pd

    df = pd.DataFrame(
        {
            "time": np.asarray(pts, np.float64),
            "frame_idx": np.asarray(frame_idx, np.int64),
            "observed": np.asarray(observed, bool).astype(np.int8),
        }
    )
    for c, v in angles.items():
        df[c] = np.asarray(v, np.float64)
    path = Path(path)
    df.to_csv(path, index=False, float_format="%.6f")
    return path
