"""Detections read from a file, for users who run their own detector.

Two formats, chosen by extension (``.txt`` -> MOT, ``.json`` -> JSON):

**MOT txt** (MOTChallenge ``det.txt`` / ``gt.txt``): one box per line,
``frame,id,x,y,w,h,score[,...]`` with 1-based ``frame`` (frame 1 = ``frame_idx`` 0), top-left
``x, y`` and size ``w, h`` in pixels; ``id`` is ignored (-1 in detection files); extra
columns are ignored; a score of -1 or a missing score means 1.  Blank lines and lines
starting with ``#`` are skipped.

**JSON**: a list of per-frame records with 0-based frame indices (``frame_idx`` as in
hmrflow) and boxes as ``[x1, y1, x2, y2, score]`` (score optional, default 1)::

    [{"frame_idx": 0, "boxes": [[10, 20, 60, 200, 0.98], [100, 30, 140, 190]]},
     {"frame_idx": 1, "boxes": []}]

Boxes are xyxy pixels in the upright frame, OpenCV convention (as :class:`Detections`).
File-provided detections have no masks: the mask fills the box (all True).  Any malformed
line or record raises :class:`HmrflowError` naming the file and line (or record index).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hmrflow.pipeline.config import DetectConfig
from hmrflow.pipeline.errors import ConfigError, HmrflowError
from hmrflow.pipeline.types import MASK_RES, FrameBatch
from hmrflow.stages.detect.decode_boxes import FrameDetections


class DetectionsFileError(HmrflowError):
    """A detections file is missing or malformed (the message names file and line)."""


def _box_row(values: list[float], where: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise DetectionsFileError(f"{where}: box values must be finite numbers, got {values}")
    x1, y1, x2, y2, s = values
    if x2 < x1 or y2 < y1:
        raise DetectionsFileError(f"{where}: box has negative width or height ({x1}, {y1}, {x2}, {y2})")
    if not 0.0 <= s <= 1.0:
        raise DetectionsFileError(f"{where}: score {s} is outside [0, 1]")
    return [x1, y1, x2, y2, s]


def read_mot(path: str | Path) -> dict[int, np.ndarray]:
    """MOT txt -> ``{frame_idx (0-based): (N, 5) float32 [x1, y1, x2, y2, score]}``."""
    p = Path(path)
    out: dict[int, list[list[float]]] = {}
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectionsFileError(f"{p}: cannot read detections file ({exc})") from None
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [t for t in line.replace(" ", ",").replace("\t", ",").split(",") if t != ""]
        where = f"{p}:{n}"
        if len(parts) < 6:
            raise DetectionsFileError(f"{where}: expected 'frame,id,x,y,w,h,score,...', got {line!r}")
        try:
            frame = int(float(parts[0]))
            x, y, w, h = (float(t) for t in parts[2:6])
            score = float(parts[6]) if len(parts) > 6 else 1.0
        except ValueError:
            raise DetectionsFileError(f"{where}: not a number in {line!r}") from None
        if frame < 1 or float(parts[0]) != frame:
            raise DetectionsFileError(
                f"{where}: frame must be an integer >= 1 (MOT frames are 1-based), got {parts[0]!r}"
            )
        if score == -1:
            score = 1.0
        out.setdefault(frame - 1, []).append(_box_row([x, y, x + w, y + h, score], where))
    return {f: np.asarray(rows, np.float32).reshape(-1, 5) for f, rows in out.items()}


def read_json(path: str | Path) -> dict[int, np.ndarray]:
    """JSON (module docstring) -> ``{frame_idx: (N, 5) float32 [x1, y1, x2, y2, score]}``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectionsFileError(f"{p}: cannot read detections file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DetectionsFileError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise DetectionsFileError(
            f"{p}: top level must be a list of {{frame_idx, boxes}} records, got {type(data).__name__}"
        )
    out: dict[int, list[list[float]]] = {}
    for i, rec in enumerate(data):
        where = f"{p}: record {i}"
        if not isinstance(rec, dict) or "frame_idx" not in rec or "boxes" not in rec:
            raise DetectionsFileError(
                f"{where}: expected {{'frame_idx': int, 'boxes': [[x1, y1, x2, y2, score], ...]}}"
            )
        f = rec["frame_idx"]
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise DetectionsFileError(f"{where}: frame_idx must be an integer >= 0, got {f!r}")
        if not isinstance(rec["boxes"], list):
            raise DetectionsFileError(f"{where}: boxes must be a list")
        rows = out.setdefault(f, [])
        for j, b in enumerate(rec["boxes"]):
            bw = f"{where}, box {j}"
            if (
                not isinstance(b, list)
                or len(b) not in (4, 5)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
            ):
                raise DetectionsFileError(f"{bw}: expected [x1, y1, x2, y2] or [x1, y1, x2, y2, score], got {b!r}")
            vals = [float(v) for v in b] + ([1.0] if len(b) == 4 else [])
            rows.append(_box_row(vals, bw))
    return {f: np.asarray(rows, np.float32).reshape(-1, 5) for f, rows in out.items()}


def write_mot(path: str | Path, per_frame: dict[int, np.ndarray]) -> Path:
    """Write ``{frame_idx: (N, 5) [x1, y1, x2, y2, score]}`` as MOT txt (id -1, 1-based frames)."""
    lines = []
    for f in sorted(per_frame):
        for x1, y1, x2, y2, s in np.asarray(per_frame[f], np.float64).reshape(-1, 5):
            lines.append(f"{f + 1},-1,{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},{s:.5f},-1,-1,-1")
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, per_frame: dict[int, np.ndarray]) -> Path:
    """Write ``{frame_idx: (N, 5)}`` in the JSON format of the module docstring."""
    recs = [
        {
            "frame_idx": int(f),
            "boxes": [[round(float(v), 4) for v in row] for row in np.asarray(per_frame[f]).reshape(-1, 5)],
        }
        for f in sorted(per_frame)
    ]
    Path(path).write_text(json.dumps(recs, indent=1), encoding="utf-8")
    return Path(path)


def read_detections(path: str | Path) -> dict[int, np.ndarray]:
    """Read MOT txt (``.txt``) or JSON (``.json``) detections."""
    p = Path(path)
    if not p.is_file():
        raise DetectionsFileError(f"{p}: detections file not found")
    if p.suffix.lower() == ".json":
        return read_json(p)
    if p.suffix.lower() in (".txt", ".csv", ".mot"):
        return read_mot(p)
    raise DetectionsFileError(f"{p}: unknown detections format {p.suffix!r}; use .txt (MOT) or .json")


class FileDetector:
    """``FrameBatch -> per-frame detections`` from a file read once (frames not in the file: none)."""

    def __init__(self, cfg: DetectConfig) -> None:
        if not cfg.detections_path:
            raise ConfigError("detect.detections_path: required when detect.kind=file")
        self.table = read_detections(cfg.detections_path)

    def __call__(self, frames: FrameBatch) -> list[FrameDetections]:
        h, w = frames.images.shape[1:3]
        out = []
        for f in frames.frame_idx:
            rows = self.table.get(int(f), np.zeros((0, 5), np.float32))
            boxes = rows[:, :4].copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(-0.5, w - 0.5)
            boxes[:, 1::2] = boxes[:, 1::2].clip(-0.5, h - 0.5)
            out.append(
                FrameDetections(
                    boxes.astype(np.float32),
                    rows[:, 4].astype(np.float32),
                    np.ones((len(rows), MASK_RES, MASK_RES), bool),
                )
            )
        return out
