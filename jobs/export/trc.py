"""OpenSim ``.trc`` marker files (tab-separated text).

Layout (OpenSim's "PathFileType 4" header)::

    PathFileType  4  (X/Y/Z)  <file name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    <rate>    <rate>      <T>        <M>         mm     <rate>        <first frame#>      <T>
    Frame#  Time  <marker 1>  ""  ""  <marker 2> ...
    ""      ""    X1  Y1  Z1  X2  Y2  Z2 ...
    (blank line)
    <frame#>  <time>  x  y  z ...

* ``Frame#`` = video frame index + 1 (1-based, may skip where the track skips frames);
  ``Time`` = the frame's presentation timestamp ``pts`` in seconds (from the video start).
* ``DataRate`` = median of ``1/diff(pts)`` (the npz's ``mocap_framerate``).
* Coordinates: OpenSim is Y-up.  Camera (OpenCV: x right, y down, z forward) points are
  mapped by ``p_trc = diag(1, -1, -1) p_cam``: X = camera right, Y = up (against image
  down), Z = toward the camera.  Units: millimetres by default (``units="m"`` for metres).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from hmrflow.jobs.export.angles import CAMERA_TO_YUP

Units = Literal["mm", "m"]
_SCALE = {"mm": 1000.0, "m": 1.0}


def camera_to_yup_points(points: np.ndarray) -> np.ndarray:
    """(..., 3) OpenCV camera-frame points -> Y-up frame (x right, y up, z toward the camera)."""
    return np.asarray(points, np.float64) @ CAMERA_TO_YUP.T


def write_trc(
    path: str | Path,
    names: Sequence[str],
    positions_cam: np.ndarray,
    frame_idx: np.ndarray,
    pts: np.ndarray,
    rate: float,
    units: Units = "mm",
    convert: bool = True,
) -> Path:
    """Write markers to ``path``.

    Args:
        names: M marker names.
        positions_cam: (T, M, 3) metres, OpenCV camera frame (converted as in the module doc).
        frame_idx: (T,) int video frame indices (written 1-based as ``Frame#``).
        pts: (T,) float seconds (the ``Time`` column).
        rate: frames per second for ``DataRate``/``CameraRate``.
        units: "mm" or "m".
        convert: False when ``positions_cam`` is already in the file's frame (the OpenSim
            path writes its ground frame: X forward, Y up, Z right).
    """
    if units not in _SCALE:
        raise ValueError(f"units must be 'mm' or 'm', got {units!r}")
    path = Path(path)
    pos = (camera_to_yup_points(positions_cam) if convert else np.asarray(positions_cam, np.float64)) * _SCALE[units]
    t, m = pos.shape[:2]
    if len(names) != m:
        raise ValueError(f"{len(names)} names for {m} markers")
    first = int(frame_idx[0]) + 1 if t else 1
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{rate:.6f}\t{rate:.6f}\t{t}\t{m}\t{units}\t{rate:.6f}\t{first}\t{t}",
        "Frame#\tTime\t" + "\t".join(f"{n}\t\t" for n in names).rstrip("\t"),
        "\t\t" + "\t".join(f"X{i + 1}\tY{i + 1}\tZ{i + 1}" for i in range(m)),
        "",
    ]
    fmt = "%.6f" if units == "m" else "%.4f"
    for k in range(t):
        vals = "\t".join(fmt % v for v in pos[k].reshape(-1))
        lines.append(f"{int(frame_idx[k]) + 1}\t{float(pts[k]):.6f}\t{vals}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
