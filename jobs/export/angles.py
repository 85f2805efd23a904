"""Anatomical joint angles (degrees) from SMPL's local joint rotations.

SMPL axes
---------
In SMPL's rest pose (T-pose, facing +z) every joint frame is parallel to the body frame:
**x = the subject's left, y = up, z = forward (anterior)**.  A joint's local rotation
``R_j`` (from ``poses``) rotates the child segment about the joint, in its parent's frame.
So, in the rest pose, the x axis is the medio-lateral (flexion) axis, z the
antero-posterior axis and y the vertical (long axis of the trunk and legs; the arms lie
along +x (left) and -x (right)).

Euler decomposition
-------------------
Every angle group is an **intrinsic** (body-fixed, "floating axis") Euler decomposition
``R = R_a(alpha) R_b(beta) R_c(gamma)`` computed with ``scipy`` (upper-case sequence), in
the order of the joint coordinate systems used in biomechanics (Grood & Suntay; ISB):
flexion about the proximal medio-lateral axis first, then ab/adduction about the floating
antero-posterior axis, then axial rotation about the distal long axis.  Signs are then
flipped per side so that every name means the same motion on the left and the right.

=====================  =========================  =======  ===========================================
group                  rotation decomposed         seq      angles (positive direction)
=====================  =========================  =======  ===========================================
pelvis                 C @ R_pelvis (global)       XZY      pelvis_tilt (+ = forward/anterior tilt, +x),
                                                            pelvis_list (+ = left side up, +z),
                                                            pelvis_rotation (+ = turning to the left, +y)
trunk                  R_spine1 R_spine2 R_spine3  XZY      trunk_flexion (+ = bending forward, +x),
                                                            trunk_bending (+ = to the left, -z),
                                                            trunk_rotation (+ = to the left, +y)
hip_{l,r}              R_hip                       XZY      hip_flexion (+ = thigh forward, -x),
                                                            hip_adduction (+ = toward the midline;
                                                            left -z, right +z),
                                                            hip_rotation (+ = internal; left -y, right +y)
knee_{l,r}             R_knee                      XZY      knee_flexion (+ = shank backward, +x)
ankle_{l,r}            R_ankle                     XZY      ankle_dorsiflexion (+ = toes up, -x),
                                                            ankle_inversion (+ = sole inward;
                                                            left -z, right +z)
shoulder_{l,r}         R_collar R_shoulder D^T     XZY      shoulder_flexion (+ = arm forward, -x),
                                                            shoulder_abduction (+ = arm away from the
                                                            body; left +z, right -z),
                                                            shoulder_rotation (+ = internal;
                                                            left -y, right +y)
elbow_{l,r}            R_elbow                     YZX      elbow_flexion (+ = forearm forward;
                                                            left -y, right +y),
                                                            elbow_pronation (+ = pronation;
                                                            left +x, right -x)
=====================  =========================  =======  ===========================================

* ``C = diag(1, -1, -1)`` turns the OpenCV camera frame (y down, z forward) into an upright
  frame (y up, z toward the viewer); pelvis angles are therefore relative to a person
  standing upright **facing the camera** (all zero then), not relative to the ground.
* Shoulder angles are of the humerus relative to the thorax (``spine3``), so the collar's
  SMPL rotation is included.  SMPL's rest arm is horizontal (T-pose); ``D`` is the rotation
  that lowers the rest arm to hang along the trunk (90 deg about z: ``Rz(-90)`` left,
  ``Rz(+90)`` right), so with the arm hanging down all shoulder angles are zero and the
  hip's conventions apply.  As for any three-angle decomposition there is a gimbal lock:
  here at 90 deg abduction (arm horizontal to the side), where flexion and rotation are
  coupled (only their sum is defined).
* Knee and ankle also have ab/adduction and rotation components in SMPL; only the
  clinically used ones are exported (knee flexion; ankle dorsiflexion and inversion).
* Of the two Euler solutions of a rotation, the one with the smaller first and third
  angles is reported, so the middle angle may exceed 90 deg (arm raised overhead sideways:
  shoulder abduction 150, not flexion 180 + abduction 30 + rotation 180).
* Angles are continuous over time: no 360 deg jumps, and no switch between the two Euler
  solutions near a middle angle of +-90 deg; each angle's median lies within +-180 deg.
  Reported in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmrflow.priors.skeleton import JOINT_INDEX

#: OpenCV camera (x right, y down, z forward) -> upright viewer frame (x right, y up, z back).
CAMERA_TO_YUP: np.ndarray = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class AngleGroup:
    """One Euler decomposition: joints composed (proximal first), sequence, named outputs.

    ``outputs``: (name, index into the Euler triple, sign).  ``pre`` (3, 3) or None is
    right-multiplied after composing (rest-pose rebasing, e.g. the shoulder's ``D^T``);
    ``camera`` left-multiplies by :data:`CAMERA_TO_YUP` (global orientation only).
    """

    name: str
    joints: tuple[int, ...]
    seq: str
    outputs: tuple[tuple[str, int, float], ...]
    post: tuple[tuple[float, ...], ...] | None = None
    camera: bool = False


def _rz(deg: float) -> tuple[tuple[float, ...], ...]:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m[np.abs(m) < 1e-15] = 0.0
    return tuple(map(tuple, m))


def _side_groups(side: str) -> list[AngleGroup]:
    s = 1.0 if side == "left" else -1.0  # mirror sign: + for the left side
    j = lambda name: JOINT_INDEX[f"{side}_{name}"]  # noqa: E731
    suffix = "_l" if side == "left" else "_r"
    # D^T: rest arm horizontal -> hanging; R_anat = R @ D^T with D = Rz(-90 s)
    d_t = _rz(90.0 * s)
    return [
        AngleGroup(
            f"hip{suffix}",
            (j("hip"),),
            "XZY",
            ((f"hip_flexion{suffix}", 0, -1.0), (f"hip_adduction{suffix}", 1, -s), (f"hip_rotation{suffix}", 2, -s)),
        ),
        AngleGroup(f"knee{suffix}", (j("knee"),), "XZY", ((f"knee_flexion{suffix}", 0, 1.0),)),
        AngleGroup(
            f"ankle{suffix}",
            (j("ankle"),),
            "XZY",
            ((f"ankle_dorsiflexion{suffix}", 0, -1.0), (f"ankle_inversion{suffix}", 1, -s)),
        ),
        AngleGroup(
            f"shoulder{suffix}",
            (j("collar"), j("shoulder")),
            "XZY",
            (
                (f"shoulder_flexion{suffix}", 0, -1.0),
                (f"shoulder_abduction{suffix}", 1, s),
                (f"shoulder_rotation{suffix}", 2, -s),
            ),
            post=d_t,
        ),
        AngleGroup(
            f"elbow{suffix}",
            (j("elbow"),),
            "YZX",
            ((f"elbow_flexion{suffix}", 0, -s), (f"elbow_pronation{suffix}", 2, s)),
        ),
    ]


#: Every exported angle group, in column order.
ANGLE_GROUPS: tuple[AngleGroup, ...] = (
    AngleGroup(
        "pelvis",
        (0,),
        "XZY",
        (("pelvis_tilt", 0, 1.0), ("pelvis_list", 1, 1.0), ("pelvis_rotation", 2, 1.0)),
        camera=True,
    ),
    AngleGroup(
        "trunk",
        (JOINT_INDEX["spine1"], JOINT_INDEX["spine2"], JOINT_INDEX["spine3"]),
        "XZY",
        (("trunk_flexion", 0, 1.0), ("trunk_bending", 1, -1.0), ("trunk_rotation", 2, 1.0)),
    ),
    *_side_groups("left"),
    *_side_groups("right"),
)
#: Column names of :func:`joint_angles`, in order.
ANGLE_NAMES: tuple[str, ...] = tuple(name for g in ANGLE_GROUPS for name, _, _ in g.outputs)
#: The angles the QC report plots.
MAIN_ANGLES: tuple[str, ...] = (
    "hip_flexion_l",
    "hip_flexion_r",
    "knee_flexion_l",
    "knee_flexion_r",
    "elbow_flexion_l",
    "elbow_flexion_r",
)


def group_rotation(rotmats: np.ndarray, group: AngleGroup) -> np.ndarray:
    """(T, 24, 3, 3) local rotations -> (T, 3, 3) the rotation ``group`` decomposes."""
    rot = np.asarray(rotmats, np.float64)
    out = rot[:, group.joints[0]]
    for k in group.joints[1:]:
        out = out @ rot[:, k]
    if group.camera:
        out = CAMERA_TO_YUP @ out
    if group.post is not None:
        out = out @ np.asarray(group.post)
    return out


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _closest_branch(ang: np.ndarray) -> np.ndarray:
    """Pick, per row, the Euler solution with the smaller ``|first| + |third|``.

    A Tait-Bryan triple (a, b, c) and (a + pi, pi - b, c + pi) give the same rotation;
    scipy returns |b| <= 90 deg.  A shoulder abducted beyond 90 deg is the second one
    (abduction 120, no flexion or rotation), not (180, 60, 180).
    """
    alt = np.stack([_wrap(ang[:, 0] + np.pi), _wrap(np.pi - ang[:, 1]), _wrap(ang[:, 2] + np.pi)], axis=1)
    use_alt = np.abs(alt[:, 0]) + np.abs(alt[:, 2]) < np.abs(ang[:, 0]) + np.abs(ang[:, 2]) - 1e-9
    return np.where(use_alt[:, None], alt, ang)


def euler_deg(rot: np.ndarray, seq: str, unwrap: bool = True) -> np.ndarray:
    """(T, 3, 3) -> (T, 3) intrinsic Euler angles in degrees (``seq`` upper-case, scipy).

    Of the two equivalent solutions the one with the smaller first and third angles is
    kept (so a middle angle beyond 90 deg, e.g. shoulder abduction 120, is reported as such).
    With ``unwrap`` each angle is unwrapped over time (removes +-360 jumps).
    """
    from scipy.spatial.transform import Rotation

    if len(rot) == 0:
        return np.zeros((0, 3))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():  # gimbal-lock warning: documented, angles still valid
            warnings.simplefilter("ignore", UserWarning)
            ang = Rotation.from_matrix(rot).as_euler(seq)
    ang = _closest_branch(ang)
    if unwrap and len(ang) > 1:
        ang = _continuous(ang)
    return np.degrees(ang)


def _continuous(ang: np.ndarray) -> np.ndarray:
    """(T, 3) Euler triples -> a continuous path through them.

    Frame by frame, of the two equivalent triples (:func:`_closest_branch`) and their 360-deg
    copies, the one nearest the previous frame's is taken, so a passage near the middle
    angle's +-90 deg does not switch branch and the first and third angles never pile up
    half-turns (plain unwrapping of the per-frame choice ran to +-380 deg).  Each angle is
    then shifted by whole turns so that its median lies within +-180 deg.
    """
    alt = np.stack([ang[:, 0] + np.pi, np.pi - ang[:, 1], ang[:, 2] + np.pi], axis=1)
    out = np.empty_like(ang)
    out[0] = ang[0]
    two_pi = 2 * np.pi
    for t in range(1, len(ang)):
        prev = out[t - 1]
        best, best_d = ang[t], np.inf
        for cand in (ang[t], alt[t]):
            c = cand + two_pi * np.round((prev - cand) / two_pi)
            d = float(np.sum((c - prev) ** 2))
            if d < best_d:
                best, best_d = c, d
        out[t] = best
    return out - two_pi * np.round(np.median(out, axis=0) / two_pi)


def joint_angles(rotmats: np.ndarray, unwrap: bool = True) -> dict[str, np.ndarray]:
    """Anatomical angles in degrees, one (T,) array per name in :data:`ANGLE_NAMES`.

    Args:
        rotmats: (T, 24, 3, 3) SMPL local rotations (joint 0 = global orientation in the
            OpenCV camera frame), as in ``poses`` of the outputs.
        unwrap: unwrap each angle over time.
    """
    rotmats = np.asarray(rotmats, np.float64)
    if rotmats.ndim != 4 or rotmats.shape[1:] != (24, 3, 3):
        raise ValueError(f"rotmats: expected (T, 24, 3, 3), got {rotmats.shape}")
    out: dict[str, np.ndarray] = {}
    for g in ANGLE_GROUPS:
        eul = euler_deg(group_rotation(rotmats, g), g.seq, unwrap=unwrap)
        for name, idx, sign in g.outputs:
            out[name] = sign * eul[:, idx] + 0.0  # + 0.0 turns -0.0 into 0.0
    return out


def poses_to_angles(poses: np.ndarray, unwrap: bool = True) -> dict[str, np.ndarray]:
    """Same as :func:`joint_angles` from (T, 72) axis-angle ``poses``."""
    from scipy.spatial.transform import Rotation

    p = np.asarray(poses, np.float64)
    rot = Rotation.from_rotvec(p.reshape(-1, 3)).as_matrix().reshape(p.shape[0], 24, 3, 3)
    return joint_angles(rot, unwrap=unwrap)
