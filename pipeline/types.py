"""Data passed between stages: frozen dataclasses of equal-length NumPy columns.

Every type here follows one rule, in the spirit of detectron2's ``Instances``: the
fields named in ``ROW_FIELDS`` are arrays whose first dimension is the number of rows,
checked in ``__post_init__``; the remaining fields are per-object scalars or arrays
(``video_id``, a track's ``betas``).  ``to_columns()`` turns an object into a dict of
flat numeric arrays of equal length (what a Ray Data batch is) and ``from_columns()``
turns it back; no nested dicts and no ``None`` columns, so Ray never falls back to
pandas blocks.

Conventions used everywhere in hmrflow
--------------------------------------
* Frame timestamps ``pts`` are seconds (float64) from the start of the stream.
* Image arrays are ``uint8`` RGB, ``(H, W, 3)``, upright (rotation metadata applied).
* Boxes are ``xyxy`` pixels in the upright frame.
* Camera frame is OpenCV's: x right, y down, z forward, metres.
* SMPL rotations are rotation matrices ``(..., 24, 3, 3)``, joint 0 the global
  orientation in the camera frame; ``betas`` are 10 shape coefficients.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence, TypeVar

import numpy as np

#: Resolution of the box-relative person masks carried by :class:`Detections`.
MASK_RES = 32
#: Number of SMPL joints (including the root).
N_JOINTS = 24
#: Number of SMPL shape coefficients carried by hmrflow.
N_BETAS = 10
#: Width of the per-detection appearance descriptor (see :mod:`hmrflow.stages.track.appearance`).
APPEARANCE_DIM = 51
#: Width of the per-row image feature the estimator emits for refinement
#: (see :mod:`hmrflow.stages.mesh.features`); stored as float16.
FEATURE_DIM = 128


def _default_feature(obj: Any, rows_from: str) -> None:
    """Fill an unset ``feature`` column with zeros (all-zero row: "no image feature")."""
    if obj.feature is None:
        n = len(np.asarray(getattr(obj, rows_from)))
        object.__setattr__(obj, "feature", np.zeros((n, FEATURE_DIM), np.float16))


def _default_vertices(obj: Any, rows_from: str) -> None:
    """Fill an unset ``vertices`` column with (N, 0, 3): no mesh kept."""
    if obj.vertices is None:
        n = len(np.asarray(getattr(obj, rows_from)))
        object.__setattr__(obj, "vertices", np.zeros((n, 0, 3), np.float16))


def _default_appearance(obj: Any, rows_from: str) -> None:
    """Fill unset ``appearance`` (zeros: "no appearance known") and ``at_border`` (False) columns."""
    n = len(np.asarray(getattr(obj, rows_from)))
    if obj.appearance is None:
        object.__setattr__(obj, "appearance", np.zeros((n, APPEARANCE_DIM), np.float32))
    if obj.at_border is None:
        object.__setattr__(obj, "at_border", np.zeros(n, bool))


T = TypeVar("T", bound="Columnar")


@dataclass(frozen=True)
class Columnar:
    """Base for column tables: ``ROW_FIELDS`` share their first dimension."""

    ROW_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: Per-object fields that are not rows (kept as-is; must be numeric or str).
    META_FIELDS: ClassVar[tuple[str, ...]] = ("video_id",)

    def __post_init__(self) -> None:
        n = None
        for name in self.ROW_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{type(self).__name__}.{name} must be a numpy array, got {type(value).__name__}")
            if value.ndim == 0:
                raise ValueError(f"{type(self).__name__}.{name} must have a row dimension")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(
                    f"{type(self).__name__}: column {name!r} has {value.shape[0]} rows, "
                    f"expected {n} (from {self.ROW_FIELDS[0]!r})"
                )

    def __len__(self) -> int:
        return int(getattr(self, self.ROW_FIELDS[0]).shape[0])

    # ------------------------------------------------------------------ columns
    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat dict of equal-length arrays; meta fields are broadcast per row.

        Per-object arrays (e.g. a track's ``betas`` of shape ``(10,)``) are repeated
        for every row so that the dict is a valid Ray Data batch.
        """
        n = len(self)
        cols: dict[str, np.ndarray] = {}
        for name in self.META_FIELDS:
            value = getattr(self, name)
            arr = np.asarray(value)
            cols[name] = np.broadcast_to(arr, (n,) + arr.shape).copy()
        for name in self.ROW_FIELDS:
            cols[name] = np.ascontiguousarray(getattr(self, name))
        return cols

    @classmethod
    def from_columns(cls: type[T], cols: Mapping[str, Any]) -> T:
        """Inverse of :meth:`to_columns`; meta fields must be constant over rows."""
        kwargs: dict[str, Any] = {}
        missing = [f for f in cls.ROW_FIELDS + cls.META_FIELDS if f not in cols]
        if missing:
            raise KeyError(f"{cls.__name__}.from_columns: missing columns {missing}")
        for name in cls.ROW_FIELDS:
            kwargs[name] = np.array(cols[name], copy=True)  # Ray batches are read-only
        n = len(kwargs[cls.ROW_FIELDS[0]])
        for name in cls.META_FIELDS:
            col = np.asarray(cols[name])
            if n == 0:
                raise ValueError(f"{cls.__name__}.from_columns: cannot recover {name!r} from 0 rows")
            first = col[0]
            if not all(np.array_equal(first, c) for c in col[1:]):
                raise ValueError(f"{cls.__name__}.from_columns: {name!r} differs between rows")
            kwargs[name] = first.item() if isinstance(first, np.generic) else first
            if isinstance(kwargs[name], np.ndarray):
                kwargs[name] = kwargs[name].copy()
        return cls(**kwargs)

    # ------------------------------------------------------------- row algebra
    def select(self: T, index: np.ndarray | Sequence[int] | slice) -> T:
        """Rows picked by a boolean mask, an index array or a slice."""
        if isinstance(index, slice):
            idx: Any = index
        else:
            idx = np.asarray(index)
            if idx.dtype == bool and idx.shape != (len(self),):
                raise ValueError(f"boolean mask of shape {idx.shape} for {len(self)} rows")
        changes = {name: getattr(self, name)[idx] for name in self.ROW_FIELDS}
        return dataclasses.replace(self, **changes)

    @classmethod
    def cat(cls: type[T], parts: Iterable[T]) -> T:
        """Concatenate row-wise; meta fields must agree."""
        parts = list(parts)
        if not parts:
            raise ValueError(f"{cls.__name__}.cat of nothing")
        first = parts[0]
        for p in parts[1:]:
            for name in cls.META_FIELDS:
                if not np.array_equal(np.asarray(getattr(p, name)), np.asarray(getattr(first, name))):
                    raise ValueError(f"{cls.__name__}.cat: {name!r} differs between parts")
        changes = {name: np.concatenate([getattr(p, name) for p in parts], axis=0) for name in cls.ROW_FIELDS}
        return dataclasses.replace(first, **changes)

    def __eq__(self, other: object) -> bool:  # arrays make the default __eq__ ambiguous
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                a, b = np.asarray(a), np.asarray(b)
                nan_ok = a.dtype.kind in "fc" and b.dtype.kind in "fc"  # unknown (NaN) columns are equal
                if not np.array_equal(a, b, equal_nan=nan_ok):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class ClipRef:
    """One input video, as found by a probe.

    ``fps`` is the container's nominal rate (it can be wrong for VFR files: use
    per-frame ``pts``); ``n_frames`` may be an estimate (-1 when unknown);
    ``rotation`` is the clockwise display rotation in degrees (0, 90, 180, 270) that the
    decoder applies; ``width``/``height`` are the upright (displayed) size; ``start``/``end``
    a per-video time window (a batch manifest's columns).
    """

    video_id: str
    path: str
    fps: float = 0.0
    n_frames: int = -1
    rotation: int = 0
    width: int = 0
    height: int = 0
    duration_s: float = 0.0
    #: Time window of this video ("12.5s", "300f"; see :mod:`hmrflow.pipeline.window`): decode
    #: only ``start <= t < end``.  None sides fall back to ``decode.start``/``decode.end``.
    start: str | None = None
    end: str | None = None


# ------------------------------------------------------------------------- frames
@dataclass(frozen=True, eq=False)
class FrameBatch(Columnar):
    """A batch of decoded frames of one video.

    frame_idx: (F,) int64 index of the frame in decode order (after subsampling the
        original index is kept, so indices may skip).
    pts: (F,) float64 presentation time in seconds.
    images: (F, H, W, 3) uint8 RGB, upright.
    """

    ROW_FIELDS: ClassVar[tuple[str, ...]] = ("frame_idx", "pts", "images")

    video_id: str
    frame_idx: np.ndarray
    pts: np.ndarray
    images: np.ndarray


@dataclass(frozen=True, eq=False)
class Detections(Columnar):
    """People found in frames.

    frame_idx: (N,) int64; pts: (N,) float64 seconds.
    boxes_xyxy: (N, 4) float32 pixels.
    scores: (N,) float32 in [0, 1].
    masks: (N, MASK_RES, MASK_RES) bool, the person mask resampled to the box
        (row 0 = box top).  A detector without masks fills the box (all True).
    appearance: (N, APPEARANCE_DIM) float32 clothing-colour descriptor under the mask
        (:mod:`hmrflow.stages.track.appearance`); None at construction means all zeros (unknown).
    at_border: (N,) bool, the box touches the image border (the person may be cut off: box,
        looks and depth are partial); None at construction means False.
    """

    ROW_FIELDS: ClassVar[tuple[str, ...]] = (
        "frame_idx",
        "pts",
        "boxes_xyxy",
        "scores",
        "masks",
        "appearance",
        "at_border",
    )

    video_id: str
    frame_idx: np.ndarray
    pts: np.ndarray
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    appearance: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    at_border: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        _default_appearance(self, "frame_idx")
        super().__post_init__()

    @classmethod
    def empty(cls, video_id: str) -> "Detections":
        return cls(
            video_id=video_id,
            frame_idx=np.zeros(0, np.int64),
            pts=np.zeros(0, np.float64),
            boxes_xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            masks=np.zeros((0, MASK_RES, MASK_RES), bool),
        )


@dataclass(frozen=True, eq=False)
class MeshEstimates(Columnar):
    """Per-frame SMPL estimates of detected people.

    frame_idx: (N,) int64; pts: (N,) float64 seconds.
    boxes_xyxy: (N, 4) float32; scores: (N,) float32 detector confidence.
    rotmats: (N, 24, 3, 3) float32, joint 0 = global orientation in the camera frame.
    betas: (N, 10) float32.
    cam_t: (N, 3) float32 SMPL translation in the camera frame (metres).
    focal: (N,) float32 focal length in pixels used for cam_t.
    confidence: (N,) float32 estimator confidence in [0, 1].
    appearance: (N, APPEARANCE_DIM) float32, the detection's appearance descriptor (zeros:
        unknown); None at construction means zeros.
    at_border: (N,) bool, the detection's box touches the image border; None means False.
    feature: (N, FEATURE_DIM) float16, the estimator's compact image feature of the row (what
        the refinement's denoiser is conditioned on beside the SMPL estimate); an all-zero row
        means "no feature"; None at construction means zeros.
    vertices: (N, V, 3) float16, the estimator's own mesh of the row (a FastMETRO head with
        ``estimate.vertices``): metres relative to its pelvis joint, camera axes; (N, 0, 3)
        when no mesh is kept (None at construction).
    """

    ROW_FIELDS: ClassVar[tuple[str, ...]] = (
        "frame_idx",
        "pts",
        "boxes_xyxy",
        "scores",
        "rotmats",
        "betas",
        "cam_t",
        "focal",
        "confidence",
        "appearance",
        "at_border",
        "feature",
        "vertices",
    )

    video_id: str
    frame_idx: np.ndarray
    pts: np.ndarray
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    rotmats: np.ndarray
    betas: np.ndarray
    cam_t: np.ndarray
    focal: np.ndarray
    confidence: np.ndarray
    appearance: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    at_border: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    feature: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    vertices: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        _default_appearance(self, "frame_idx")
        _default_feature(self, "frame_idx")
        _default_vertices(self, "frame_idx")
        super().__post_init__()

    @classmethod
    def empty(cls, video_id: str, n: int = 0) -> "MeshEstimates":
        """``n`` rows of zeros (0: no person found; more: placeholder rows of the right shapes)."""
        return cls(
            video_id=video_id,
            frame_idx=np.zeros(n, np.int64),
            pts=np.zeros(n, np.float64),
            boxes_xyxy=np.zeros((n, 4), np.float32),
            scores=np.zeros(n, np.float32),
            rotmats=np.zeros((n, N_JOINTS, 3, 3), np.float32),
            betas=np.zeros((n, N_BETAS), np.float32),
            cam_t=np.zeros((n, 3), np.float32),
            focal=np.zeros(n, np.float32),
            confidence=np.zeros(n, np.float32),
            appearance=np.zeros((n, APPEARANCE_DIM), np.float32),
            at_border=np.zeros(n, bool),
            feature=np.zeros((n, FEATURE_DIM), np.float16),
            vertices=np.zeros((n, 0, 3), np.float16),
        )


@dataclass(frozen=True, eq=False)
class TrackedEstimates(MeshEstimates):
    """:class:`MeshEstimates` with an identity per row: track_id (N,) int64, and tracklet_id (N,)
    int64, the online tracklet the row came from (a track is one or more tracklets joined by
    whole-video stitching; None at construction means the track id)."""

    ROW_FIELDS: ClassVar[tuple[str, ...]] = MeshEstimates.ROW_FIELDS + ("track_id", "tracklet_id")

    track_id: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    tracklet_id: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        if self.tracklet_id is None:
            object.__setattr__(self, "tracklet_id", np.asarray(self.track_id, np.int64).copy())
        super().__post_init__()


@dataclass(frozen=True, eq=False)
class SMPLSequence(Columnar):
    """One person's body over time (one track), the unit that is refined and written.

    frame_idx: (T,) int64, strictly increasing; pts: (T,) float64 seconds.
    observed: (T,) bool, False where the frame was filled (person not detected).
    rotmats: (T, 24, 3, 3) float32 (joint 0 = global orientation, camera frame).
    transl: (T, 3) float32 SMPL translation, camera frame, metres.
    confidence: (T,) float32 in [0, 1].
    betas: (10,) float32, one body shape per track.
    tracklet: (T,) int64, the online tracklet an observed row came from (a track is one or more
        tracklets joined by stitching); -1 on filled rows.  None at construction means all 0.
    feature: (T, FEATURE_DIM) float16, the estimator's image feature of each row (all zero on
        filled rows and where none is known).  None at construction means zeros.
    world_rotmat: (T, 3, 3) float32 global orientation in the clip's world frame (y up, see
        :mod:`hmrflow.stages.camera.world`); world_transl: (T, 3) float32 SMPL translation there.
        None at construction means NaN (no world frame known).
    vertices: (T, V, 3) float16, the estimator's own mesh of each observed row (see
        :class:`MeshEstimates`), NaN on filled rows; (T, 0, 3) when none is kept (None at
        construction).
    """

    ROW_FIELDS: ClassVar[tuple[str, ...]] = (
        "frame_idx",
        "pts",
        "observed",
        "rotmats",
        "transl",
        "confidence",
        "tracklet",
        "feature",
        "world_rotmat",
        "world_transl",
        "vertices",
    )
    META_FIELDS: ClassVar[tuple[str, ...]] = ("video_id", "track_id", "betas")

    video_id: str
    track_id: int
    betas: np.ndarray
    frame_idx: np.ndarray
    pts: np.ndarray
    observed: np.ndarray
    rotmats: np.ndarray
    transl: np.ndarray
    confidence: np.ndarray
    tracklet: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    feature: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    world_rotmat: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    world_transl: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    vertices: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        n = len(np.asarray(self.frame_idx))
        _default_vertices(self, "frame_idx")
        if self.tracklet is None:
            object.__setattr__(self, "tracklet", np.zeros(n, np.int64))
        if self.world_rotmat is None:
            object.__setattr__(self, "world_rotmat", np.full((n, 3, 3), np.nan, np.float32))
        if self.world_transl is None:
            object.__setattr__(self, "world_transl", np.full((n, 3), np.nan, np.float32))
        _default_feature(self, "frame_idx")
        super().__post_init__()
        if np.asarray(self.betas).shape != (N_BETAS,):
            raise ValueError(f"SMPLSequence.betas must have shape ({N_BETAS},), got {np.asarray(self.betas).shape}")
        if len(self.frame_idx) > 1 and np.any(np.diff(self.frame_idx) <= 0):
            raise ValueError("SMPLSequence.frame_idx must be strictly increasing")
