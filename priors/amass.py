"""AMASS-style motion files (.npz) <-> :class:`~hmrflow.priors.motions.core.Motion`.

AMASS stores z-up motions: ``poses`` (T, 72 | 156 | 165) axis-angle (SMPL, SMPL-H, SMPL-X:
the first 22 joints = 66 values are the same body joints in all three), ``trans`` (T, 3) and
``mocap_framerate`` (or ``mocap_frame_rate`` in the SMPL-X release).  The SMPL-X "G" files
split the pose into ``root_orient`` (T, 3) + ``pose_body`` (T, 63); both layouts are read.

hmrflow's world is y-up (docs/FORMATS.md).  Loading rotates by ``R = Rx(-90 deg)``
(z-up -> y-up): ``root' = R root`` and ``trans' = R (J0 + trans) - J0``, where ``J0`` is the
body model's root joint at rest (``root_joint``).  Without ``root_joint`` the translation is
rotated as a point (``trans' = R trans``); that differs only by the constant
``R J0 - J0`` (a few decimetres), which a renderer that re-grounds the mesh absorbs.
SMPL's two hand joints (22, 23) are taken from a 72-value pose and set to zero otherwise
(SMPL-H/X store fingers there instead).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hmrflow.pipeline.errors import HmrflowError
from hmrflow.priors.motions.core import Motion
from hmrflow.priors.skeleton import N_JOINTS

log = logging.getLogger(__name__)

#: z-up (AMASS) -> y-up (hmrflow world): rotation of -90 deg about x.
ZUP_TO_YUP: np.ndarray = Rotation.from_euler("x", -90.0, degrees=True).as_matrix()

_BODY_VALUES = 66  # 22 joints x 3, common to SMPL / SMPL-H / SMPL-X
_KNOWN_WIDTHS = {72: "SMPL", 156: "SMPL-H", 165: "SMPL-X"}


class AmassFormatError(HmrflowError, ValueError):
    """An AMASS-style .npz is missing a key or has arrays of the wrong shape."""


def _change_frame(
    poses: np.ndarray, trans: np.ndarray, rot: np.ndarray, root_joint: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``x' = rot x`` to a motion: root orientation and ``transl`` (see module doc)."""
    poses = poses.astype(np.float64).copy()
    r = Rotation.from_matrix(rot)
    poses[:, 0] = (r * Rotation.from_rotvec(poses[:, 0])).as_rotvec()
    j0 = np.zeros(3) if root_joint is None else np.asarray(root_joint, dtype=np.float64).reshape(3)
    trans = (np.asarray(trans, dtype=np.float64) + j0) @ rot.T - j0
    return poses, trans


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise AmassFormatError(f"{path}: file not found") from None
    except ValueError as exc:  # object arrays need pickle: we never unpickle user data
        raise AmassFormatError(f"{path}: cannot read as a plain .npz ({exc})") from None
    except OSError as exc:
        raise AmassFormatError(f"{path}: not a readable .npz file ({exc})") from None


def _body_poses(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    """``(T, 24, 3)`` SMPL body pose from either AMASS layout."""
    if "poses" in data:
        p = np.asarray(data["poses"])
        if p.ndim != 2 or p.shape[1] < 72 and p.shape[1] != _BODY_VALUES:
            raise AmassFormatError(f"{path}: 'poses' must be (T, 72+) axis-angle, got shape {p.shape}")
        if p.shape[1] not in _KNOWN_WIDTHS and p.shape[1] != _BODY_VALUES:
            log.warning("%s: unusual pose width %d; taking the first 66 values as the 22 body joints", path, p.shape[1])
        body = np.zeros((p.shape[0], N_JOINTS * 3), dtype=np.float64)
        if p.shape[1] == 72:
            body[:] = p
        else:  # SMPL-H / SMPL-X: joints 22, 23 hold fingers or the jaw, not SMPL's hands
            body[:, :_BODY_VALUES] = p[:, :_BODY_VALUES]
    elif "root_orient" in data and "pose_body" in data:
        ro, pb = np.asarray(data["root_orient"]), np.asarray(data["pose_body"])
        if ro.ndim != 2 or ro.shape[1] != 3 or pb.ndim != 2 or pb.shape[1] != 63 or len(ro) != len(pb):
            raise AmassFormatError(
                f"{path}: 'root_orient' must be (T, 3) and 'pose_body' (T, 63), got {ro.shape} and {pb.shape}"
            )
        body = np.zeros((ro.shape[0], N_JOINTS * 3), dtype=np.float64)
        body[:, :3] = ro
        body[:, 3:_BODY_VALUES] = pb
    else:
        raise AmassFormatError(
            f"{path}: missing key 'poses' (or 'root_orient' + 'pose_body'); keys present: {sorted(data)}"
        )
    if not np.isfinite(body).all():
        raise AmassFormatError(f"{path}: 'poses' contains NaN or inf")
    return body.reshape(-1, N_JOINTS, 3)


def load_amass_npz(
    path: str | Path, fps: float | None = None, *, root_joint: np.ndarray | None = None, name: str | None = None
) -> Motion:
    """Read an AMASS-style .npz into a y-up :class:`Motion`.

    Args:
        path: the .npz file.
        fps: resample to this frame rate (slerp); None keeps the file's rate.
        root_joint: ``(3,)`` rest position of the body model's root joint (``J0(betas)``) for
            the exact ``transl`` frame change; None rotates ``trans`` as a point.
        name: motion name (default: the file stem).

    Raises:
        AmassFormatError: missing key, wrong shape, mismatched lengths, non-positive rate.
    """
    path = Path(path)
    data = _read_npz(path)
    poses = _body_poses(path, data)
    if "trans" not in data:
        raise AmassFormatError(f"{path}: missing key 'trans' (T, 3); keys present: {sorted(data)}")
    trans = np.asarray(data["trans"], dtype=np.float64)
    if trans.shape != (poses.shape[0], 3):
        raise AmassFormatError(f"{path}: 'trans' must be ({poses.shape[0]}, 3) like 'poses', got {trans.shape}")
    rate_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in data), None)
    if rate_key is None:
        raise AmassFormatError(f"{path}: missing key 'mocap_framerate' (or 'mocap_frame_rate')")
    rate = float(np.asarray(data[rate_key]).reshape(-1)[0])
    if not rate > 0:
        raise AmassFormatError(f"{path}: '{rate_key}' must be > 0, got {rate}")
    if poses.shape[0] == 0:
        raise AmassFormatError(f"{path}: the motion has no frames")
    poses, trans = _change_frame(poses, trans, ZUP_TO_YUP, root_joint)
    labels = None
    if "labels" in data and data["labels"].shape == (poses.shape[0],) and data["labels"].dtype.kind == "U":
        labels = data["labels"]
    motion = Motion(name or path.stem, rate, poses, trans, labels)
    return motion if fps is None else motion.resample(fps)


def save_amass_npz(
    motion: Motion,
    path: str | Path,
    *,
    betas: np.ndarray | None = None,
    gender: str = "neutral",
    root_joint: np.ndarray | None = None,
) -> Path:
    """Write ``motion`` as an AMASS-style z-up .npz (inverse of :func:`load_amass_npz`).

    Keys: ``poses`` (T, 72) float32, ``trans`` (T, 3) float32, ``mocap_framerate``, ``betas``
    (10,), ``gender``, ``labels`` (T,) str.  Returns the path written.
    """
    path = Path(path)
    poses, trans = _change_frame(motion.poses.reshape(-1, N_JOINTS, 3), motion.trans, ZUP_TO_YUP.T, root_joint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        poses=poses.reshape(-1, N_JOINTS * 3).astype(np.float32),
        trans=trans.astype(np.float32),
        mocap_framerate=np.float64(motion.fps),
        betas=np.zeros(10, np.float32) if betas is None else np.asarray(betas, np.float32),
        gender=np.str_(gender),
        labels=np.asarray(motion.labels, dtype=str),
    )
    tmp.replace(path)
    return path


def iter_amass_dir(
    root: str | Path, fps: float | None = None, *, root_joint: np.ndarray | None = None, skip_errors: bool = True
) -> Iterator[Motion]:
    """Yield every motion under ``root`` (recursively, sorted by path), resampled to ``fps``.

    AMASS folders also hold ``shape.npz`` files (betas only): files without a pose are skipped
    (logged).  With ``skip_errors=False`` a malformed file raises :class:`AmassFormatError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise AmassFormatError(f"{root}: not a directory")
    for path in sorted(root.rglob("*.npz")):
        if path.name == "shape.npz":
            continue
        try:
            yield load_amass_npz(path, fps, root_joint=root_joint, name=str(path.relative_to(root).with_suffix("")))
        except AmassFormatError as exc:
            if not skip_errors:
                raise
            log.warning("skipping %s", exc)
