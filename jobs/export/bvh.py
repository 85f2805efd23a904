"""BVH (Biovision hierarchy) in SMPL's skeleton, for Blender and other animation tools.

* Hierarchy: SMPL's 24 joints with their SMPL names, parents from
  ``hmrflow.priors.skeleton.PARENTS``; root ``pelvis``.  Leaf joints (head, hands, feet)
  get an ``End Site`` continuing half their bone.
* ``OFFSET`` of a joint = rest-pose joint minus its parent's, for the track's ``betas``
  (the body model's ``rest_joints``), in **centimetres**, SMPL frame (y up, x = the
  subject's left, z = forward).  The root's offset is zero.
* Channels: root ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, every
  other joint ``Zrotation Xrotation Yrotation``: the local rotation is
  ``R = Rz(z) Rx(x) Ry(y)`` (intrinsic Z, then X, then Y; degrees), i.e. exactly SMPL's
  local rotation matrix of the joint.
* Y-up world: the root's global orientation and position are mapped from the OpenCV camera
  frame (y down, z forward) by ``C = diag(1, -1, -1)``: root rotation ``C R_root``, root
  position ``C (J0 + transl)`` in cm (J0 = the rest pelvis joint; SMPL rotates about it).
* ``Frame Time`` = 1 / median frame rate of the track (``mocap_framerate``).  BVH has no
  timestamps: rows are the track's frames in order; where a track skips video frames the
  exact times are in the ``.csv``/``.trc`` exports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hmrflow.jobs.export.angles import CAMERA_TO_YUP
from hmrflow.priors.skeleton import JOINT_NAMES, PARENTS

#: BVH rotation channel order (intrinsic, applied left to right) and scipy's sequence for it.
ROTATION_CHANNELS: tuple[str, str, str] = ("Zrotation", "Xrotation", "Yrotation")
EULER_SEQ = "ZXY"
#: metres -> BVH units (centimetres).
BVH_SCALE = 100.0


def _children(j: int) -> list[int]:
    return [int(c) for c in np.nonzero(PARENTS == j)[0]]


def hierarchy_text(rest_joints_m: np.ndarray) -> str:
    """The ``HIERARCHY`` section for (24, 3) rest joints in metres (SMPL frame)."""
    rest = np.asarray(rest_joints_m, np.float64) * BVH_SCALE
    rot = " ".join(ROTATION_CHANNELS)
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        if j == 0:
            lines.append(f"ROOT {JOINT_NAMES[0]}")
            off = np.zeros(3)
        else:
            lines.append(f"{ind}JOINT {JOINT_NAMES[j]}")
            off = rest[j] - rest[PARENTS[j]]
        lines.append(f"{ind}{{")
        lines.append(f"{ind}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if j == 0:
            lines.append(f"{ind}\tCHANNELS 6 Xposition Yposition Zposition {rot}")
        else:
            lines.append(f"{ind}\tCHANNELS 3 {rot}")
        kids = _children(j)
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            end = 0.5 * off
            lines.append(f"{ind}\tEnd Site")
            lines.append(f"{ind}\t{{")
            lines.append(f"{ind}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}")
            lines.append(f"{ind}\t}}")
        lines.append(f"{ind}}}")

    emit(0, 0)
    return "\n".join(lines)


def joint_order() -> list[int]:
    """Joint indices in the order their channels appear in a MOTION row (depth first)."""
    order: list[int] = []

    def visit(j: int) -> None:
        order.append(j)
        for c in _children(j):
            visit(c)

    visit(0)
    return order


def motion_values(rotmats: np.ndarray, transl: np.ndarray, rest_joints_m: np.ndarray) -> np.ndarray:
    """(T, 6 + 3*23) channel values of the MOTION rows (cm, degrees).

    Args:
        rotmats: (T, 24, 3, 3) SMPL local rotations, joint 0 in the OpenCV camera frame.
        transl: (T, 3) metres, camera frame.
        rest_joints_m: (24, 3) rest joints of the track's shape, metres.
    """
    from hmrflow.jobs.export.angles import euler_deg

    rot = np.array(rotmats, np.float64)
    t = rot.shape[0]
    rot[:, 0] = CAMERA_TO_YUP @ rot[:, 0]
    root_pos = (np.asarray(transl, np.float64) + rest_joints_m[0]) @ CAMERA_TO_YUP.T * BVH_SCALE
    cols = [root_pos]
    for j in joint_order():
        # continuous channels (the rule of every export): no 360-degree jumps and no switch
        # between the two Euler solutions from one frame to the next
        cols.append(euler_deg(rot[:, j], EULER_SEQ) if t else np.zeros((0, 3)))
    return np.concatenate(cols, axis=1) if t else np.zeros((0, 6 + 3 * 23))


def write_bvh(
    path: str | Path, rotmats: np.ndarray, transl: np.ndarray, rest_joints_m: np.ndarray, frame_rate: float
) -> Path:
    """Write one track as BVH (see the module doc for units and axes)."""
    path = Path(path)
    vals = motion_values(rotmats, transl, rest_joints_m)
    lines = [
        hierarchy_text(rest_joints_m),
        "MOTION",
        f"Frames: {len(vals)}",
        f"Frame Time: {1.0 / float(frame_rate):.8f}",
    ]
    for row in vals:
        lines.append(" ".join("%.6f" % v for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
