"""SMPL's kinematic tree: 24 joints, their names and parents (same order as SMPL files)."""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
#: parent index of each joint (-1 for the root), SMPL's kintree_table[0].
PARENTS: np.ndarray = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64
)
JOINT_INDEX: dict[str, int] = {n: i for i, n in enumerate(JOINT_NAMES)}
#: left/right swap permutation (used for flip augmentation and flip-error models).
FLIP_PERM: np.ndarray = np.array(
    [JOINT_INDEX[n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")] for n in JOINT_NAMES],
    dtype=np.int64,
)
N_JOINTS = len(JOINT_NAMES)
