"""Pinhole intrinsics: what the user gives, checked against the video, scaled to the decoded frames.

Users give ``fx, fy, cx, cy`` in the pixels of the original video (upright: rotation
metadata applied), in the config (``camera.fx`` ...) or in a small JSON/YAML file
(``camera.intrinsics``) that may also say which image size they refer to (``width``,
``height``; a calibration made at another resolution of the same camera is scaled).
Everything is checked against the probed video before decoding starts, and a bad value is
a one-line :class:`~hmrflow.pipeline.errors.ConfigError` naming the value and the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hmrflow.pipeline.config import CameraConfig
from hmrflow.pipeline.errors import ConfigError

#: Keys an intrinsics file may hold.
FILE_KEYS = ("fx", "fy", "cx", "cy", "width", "height")
#: Fields of view outside this range (degrees, either axis) are refused as absurd.
FOV_SANE_DEG = (1.0, 170.0)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera: focal lengths and principal point in pixels of a ``width`` x ``height`` image.

    source: where the values came from (``config``, ``file:<path>``, ``estimated``, ``diagonal``,
    ``hmr2``, ``estimator``).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera for the image resampled to ``width`` x ``height`` pixels."""
        sx, sy = width / self.width, height / self.height
        return replace(
            self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=width, height=height
        )

    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def vfov_deg(self) -> float:
        """Vertical field of view in degrees."""
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.fy))

    def record(self) -> dict[str, Any]:
        """JSON-able dict (the manifest's ``camera.intrinsics``)."""
        d = asdict(self)
        d["vfov_deg"] = round(self.vfov_deg, 3)
        return d


def centred(focal: float, width: int, height: int, source: str) -> Intrinsics:
    """Square pixels, principal point at the image centre (the convention of the estimator)."""
    return Intrinsics(float(focal), float(focal), width / 2.0, height / 2.0, int(width), int(height), source)


def read_intrinsics_file(path: str | Path) -> dict[str, float]:
    """The numbers of a JSON/YAML intrinsics file (ConfigError naming the file for anything wrong)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the intrinsics file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not valid JSON/YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with keys {', '.join(FILE_KEYS)}")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"{p}: unknown keys {unknown} (known: {', '.join(FILE_KEYS)})")
    if "fx" not in data:
        raise ConfigError(f"{p}: fx is missing")
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{p}: {k} must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def user_intrinsics(cfg: CameraConfig, width: int, height: int) -> Intrinsics | None:
    """The user's intrinsics for a video whose upright frames are ``width`` x ``height`` (None: none given).

    Raises ConfigError (naming the value and its file or config key) for a non-positive focal,
    a principal point outside the image, an absurd field of view, or a file made for an image
    of another aspect ratio.
    """
    if not cfg.has_intrinsics:
        return None
    if cfg.intrinsics is not None:
        where = cfg.intrinsics
        vals = read_intrinsics_file(cfg.intrinsics)
        source = f"file:{cfg.intrinsics}"
    else:
        where = "config camera"
        vals = {k: float(getattr(cfg, k)) for k in ("fx", "fy", "cx", "cy") if getattr(cfg, k) is not None}
        source = "config"
    ref_w, ref_h = vals.get("width", float(width)), vals.get("height", float(height))
    if ref_w <= 0 or ref_h <= 0:
        raise ConfigError(f"{where}: width and height must be positive, got {ref_w:g} x {ref_h:g}")
    if width and height and abs(ref_w / ref_h - width / height) > 0.01 * (width / height):
        raise ConfigError(
            f"{where}: intrinsics are for a {ref_w:g}x{ref_h:g} image, the video is {width}x{height} "
            "(another aspect ratio: a crop, not a resize)"
        )
    fx = vals["fx"]
    fy = vals.get("fy", fx)
    for k, f in (("fx", fx), ("fy", fy)):
        if f <= 0:
            raise ConfigError(f"{where}: {k} must be positive, got {f:g}")
    cx, cy = vals.get("cx", ref_w / 2.0), vals.get("cy", ref_h / 2.0)
    if not (0.0 <= cx <= ref_w and 0.0 <= cy <= ref_h):
        raise ConfigError(f"{where}: principal point ({cx:g}, {cy:g}) lies outside the {ref_w:g}x{ref_h:g} image")
    for k, f, side in (("fx", fx, ref_w), ("fy", fy, ref_h)):
        fov = math.degrees(2.0 * math.atan(0.5 * side / f))
        if not FOV_SANE_DEG[0] <= fov <= FOV_SANE_DEG[1]:
            raise ConfigError(
                f"{where}: {k}={f:g} gives a {fov:.2f} degree field of view over {side:g} pixels "
                f"(expected {FOV_SANE_DEG[0]:g}-{FOV_SANE_DEG[1]:g}); are the units pixels?"
            )
    cam = Intrinsics(fx, fy, cx, cy, int(round(ref_w)), int(round(ref_h)), source)
    return cam.scaled(width, height) if (width and height and (ref_w, ref_h) != (width, height)) else cam
