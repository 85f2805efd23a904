"""An OpenSim full-body model of one body-model shape, built with the ``opensim`` package.

Segments and coordinates follow the standard full-body models' names (Rajagopal et al. 2016,
gait2392): ``pelvis`` (6 DOF: ``pelvis_tilt/list/rotation``, ``pelvis_tx/ty/tz``), ``femur``,
``tibia``, ``talus``, ``calcn``, ``toes`` per side, ``torso`` (head included, as in Rajagopal),
``humerus``, ``ulna``, ``radius``, ``hand`` per side.  Joint centres are the body model's joints
of the given shape in the model's default pose (legs straight, arms hanging, palms facing the
thighs); every body frame is parallel to the ground frame in that pose, so all coordinates are
zero there.

Axes (OpenSim convention): X forward, Y up, Z to the subject's right.  From the SMPL body
frame (x left, y up, z forward): ``X = z, Y = y, Z = -x`` (:data:`SMPL_TO_OPENSIM`).

Coordinate signs (positive direction) are listed in :data:`COORDINATES` and docs/opensim.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmrflow.priors.skeleton import JOINT_INDEX

#: SMPL body frame (x left, y up, z forward) -> OpenSim frame (X forward, Y up, Z right).
SMPL_TO_OPENSIM: np.ndarray = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def _neg(a: tuple[float, float, float]) -> tuple[float, float, float]:
    return (-a[0], -a[1], -a[2])


@dataclass(frozen=True)
class Coordinate:
    """One rotational coordinate: name, axis in the parent's joint frame, range (deg), locked."""

    name: str
    axis: tuple[float, float, float]
    range_deg: tuple[float, float]
    locked: bool = False


@dataclass(frozen=True)
class Segment:
    """A body: name, parent body, SMPL joint at its origin, joint name, rotational coordinates,
    de Leva-like share of the total mass and the SMPL joint its centre of mass lies toward."""

    name: str
    parent: str
    origin_joint: str
    joint: str
    coordinates: tuple[Coordinate, ...]
    mass_share: float
    distal_joint: str | None


def _side(side: str) -> tuple[Segment, ...]:
    s = side[0]
    m = 1.0 if side == "right" else -1.0  # left-side axes of ab/adduction and axial rotation flip
    mx: tuple[float, float, float] = (m, 0.0, 0.0)
    my: tuple[float, float, float] = (0.0, m, 0.0)
    return (
        Segment(
            f"femur_{s}",
            "pelvis",
            f"{side}_hip",
            f"hip_{s}",
            (
                Coordinate(f"hip_flexion_{s}", _Z, (-40, 130)),
                Coordinate(f"hip_adduction_{s}", mx, (-50, 40)),
                Coordinate(f"hip_rotation_{s}", my, (-60, 60)),
            ),
            0.1416,
            f"{side}_knee",
        ),
        Segment(
            f"tibia_{s}",
            f"femur_{s}",
            f"{side}_knee",
            f"knee_{s}",
            (Coordinate(f"knee_angle_{s}", _neg(_Z), (-15, 150)),),
            0.0433,
            f"{side}_ankle",
        ),
        Segment(
            f"talus_{s}",
            f"tibia_{s}",
            f"{side}_ankle",
            f"ankle_{s}",
            (Coordinate(f"ankle_angle_{s}", _Z, (-60, 45)),),
            0.001,
            None,
        ),
        Segment(
            f"calcn_{s}",
            f"talus_{s}",
            f"{side}_ankle",
            f"subtalar_{s}",
            (Coordinate(f"subtalar_angle_{s}", mx, (-35, 35)),),
            0.0112,
            f"{side}_foot",
        ),
        Segment(
            f"toes_{s}",
            f"calcn_{s}",
            f"{side}_foot",
            f"mtp_{s}",
            (Coordinate(f"mtp_angle_{s}", _Z, (-30, 70), locked=True),),
            0.0025,
            None,
        ),
        Segment(
            f"humerus_{s}",
            "torso",
            f"{side}_shoulder",
            f"acromial_{s}",
            (
                Coordinate(f"arm_flex_{s}", _Z, (-90, 180)),
                Coordinate(f"arm_add_{s}", mx, (-180, 90)),
                Coordinate(f"arm_rot_{s}", my, (-90, 90)),
            ),
            0.0271,
            f"{side}_elbow",
        ),
        Segment(
            f"ulna_{s}",
            f"humerus_{s}",
            f"{side}_elbow",
            f"elbow_{s}",
            (Coordinate(f"elbow_flex_{s}", _Z, (-10, 160)),),
            0.0081,
            f"{side}_wrist",
        ),
        Segment(
            f"radius_{s}",
            f"ulna_{s}",
            f"{side}_elbow",
            f"radioulnar_{s}",
            (Coordinate(f"pro_sup_{s}", my, (-90, 90)),),
            0.0081,
            f"{side}_wrist",
        ),
        Segment(
            f"hand_{s}",
            f"radius_{s}",
            f"{side}_wrist",
            f"radius_hand_{s}",
            (
                Coordinate(f"wrist_flex_{s}", mx, (-70, 70)),
                Coordinate(f"wrist_dev_{s}", _Z, (-25, 35), locked=True),
            ),
            0.0061,
            f"{side}_hand",
        ),
    )


_PELVIS_ROT = (
    Coordinate("pelvis_tilt", _Z, (-90, 90)),
    Coordinate("pelvis_list", _X, (-90, 90)),
    Coordinate("pelvis_rotation", _Y, (-180, 180)),
)
PELVIS_TRANSLATIONS: tuple[str, ...] = ("pelvis_tx", "pelvis_ty", "pelvis_tz")

#: Every body, parents before children.
SEGMENTS: tuple[Segment, ...] = (
    Segment("pelvis", "ground", "pelvis", "ground_pelvis", _PELVIS_ROT, 0.142, None),
    *[seg for seg in _side("right")[:5]],
    *[seg for seg in _side("left")[:5]],
    Segment(
        "torso",
        "pelvis",
        "spine1",
        "back",
        (
            Coordinate("lumbar_extension", _Z, (-90, 90)),
            Coordinate("lumbar_bending", _X, (-90, 90)),
            Coordinate("lumbar_rotation", _Y, (-90, 90)),
        ),
        0.392,
        "neck",
    ),
    *[seg for seg in _side("right")[5:]],
    *[seg for seg in _side("left")[5:]],
)
#: Every coordinate name in model order (rotations in degrees, translations in metres).
COORDINATES: tuple[str, ...] = tuple(
    name
    for seg in SEGMENTS
    for name in ([c.name for c in seg.coordinates] + (list(PELVIS_TRANSLATIONS) if seg.name == "pelvis" else []))
)


def to_opensim(points: np.ndarray) -> np.ndarray:
    """(..., 3) SMPL-frame points or vectors -> OpenSim frame (X forward, Y up, Z right)."""
    return np.asarray(points, np.float64) @ SMPL_TO_OPENSIM.T


def _spatial_transform(osim: object, rot: tuple[Coordinate, ...], translations: tuple[str, ...]) -> object:
    """A CustomJoint transform: up to three rotations (in order) then three translations.

    Unused rotation axes get the remaining orthogonal directions with constant zero functions
    (OpenSim needs six independent axes).
    """
    st = osim.SpatialTransform()  # type: ignore[attr-defined]
    axes = [np.asarray(c.axis, np.float64) for c in rot]
    for e in np.eye(3):
        if len(axes) == 3:
            break
        if all(abs(float(np.dot(e, a))) < 0.5 for a in axes):
            axes.append(e)
    for i in range(3):
        ax = st.updTransformAxis(i)
        ax.set_axis(osim.Vec3(*axes[i]))  # type: ignore[attr-defined]
        if i < len(rot):
            ax.setCoordinateNames(osim.ArrayStr(rot[i].name, 1))  # type: ignore[attr-defined]
            ax.set_function(osim.LinearFunction(1.0, 0.0))  # type: ignore[attr-defined]
        else:
            ax.set_function(osim.Constant(0.0))  # type: ignore[attr-defined]
    for i, e in enumerate(np.eye(3)):
        ax = st.updTransformAxis(3 + i)
        ax.set_axis(osim.Vec3(*e))  # type: ignore[attr-defined]
        if translations:
            ax.setCoordinateNames(osim.ArrayStr(translations[i], 1))  # type: ignore[attr-defined]
            ax.set_function(osim.LinearFunction(1.0, 0.0))  # type: ignore[attr-defined]
        else:
            ax.set_function(osim.Constant(0.0))  # type: ignore[attr-defined]
    return st


def build_model(
    name: str,
    joints: np.ndarray,
    markers: dict[str, tuple[str, np.ndarray]],
    mass_kg: float,
) -> object:
    """Build and finalise an ``opensim.Model``.

    Args:
        name: model name.
        joints: (24, 3) SMPL-frame joint centres of the body in the model's default pose
            (arms hanging), metres.
        markers: marker name -> (OpenSim body name, (3,) SMPL-frame position in that pose).
        mass_kg: total body mass (split with de Leva-like shares).
    Returns:
        the ``opensim.Model`` (system initialised; print it with ``printToXML``).
    """
    import opensim as osim

    jo = to_opensim(joints)
    origin = {seg.name: jo[JOINT_INDEX[seg.origin_joint]] for seg in SEGMENTS}
    total_share = sum(seg.mass_share for seg in SEGMENTS)
    model = osim.Model()
    model.setName(name)
    model.setGravity(osim.Vec3(0.0, -9.80665, 0.0))
    bodies: dict[str, object] = {"ground": model.getGround()}
    for seg in SEGMENTS:
        mass = mass_kg * seg.mass_share / total_share
        com = np.zeros(3)
        length = 0.05
        if seg.distal_joint is not None:
            vec = jo[JOINT_INDEX[seg.distal_joint]] - origin[seg.name]
            com = 0.45 * vec
            length = max(float(np.linalg.norm(vec)), 0.05)
        # a rod about its long axis and a slender cylinder across it: enough for display and
        # for tools that need positive inertia; hmrflow's kinematics never use it
        i_across = mass * length**2 / 12.0
        i_long = mass * (0.2 * length) ** 2 / 2.0
        body = osim.Body(seg.name, mass, osim.Vec3(*com), osim.Inertia(i_across, i_long, i_across))
        model.addBody(body)
        bodies[seg.name] = body
        if seg.parent == "ground":
            loc = np.zeros(3)
            translations: tuple[str, ...] = PELVIS_TRANSLATIONS
        else:
            loc = origin[seg.name] - origin[seg.parent]
            translations = ()
        st = _spatial_transform(osim, seg.coordinates, translations)
        joint = osim.CustomJoint(
            seg.joint, bodies[seg.parent], osim.Vec3(*loc), osim.Vec3(0.0), body, osim.Vec3(0.0), osim.Vec3(0.0), st
        )
        model.addJoint(joint)
    for mname, (body_name, pos) in markers.items():
        local = to_opensim(pos) - origin[body_name]
        marker = osim.Marker(mname, bodies[body_name], osim.Vec3(*local))
        model.addMarker(marker)
    model.finalizeConnections()
    model.initSystem()
    coords = model.getCoordinateSet()
    for seg in SEGMENTS:
        for c in seg.coordinates:
            co = coords.get(c.name)
            co.setRangeMin(np.radians(c.range_deg[0]))
            co.setRangeMax(np.radians(c.range_deg[1]))
            co.set_clamped(False)
            if c.locked:
                co.set_locked(True)
    for t in PELVIS_TRANSLATIONS:
        co = coords.get(t)
        co.setRangeMin(-50.0)
        co.setRangeMax(50.0)
    co = coords.get("pelvis_ty")
    co.setDefaultValue(float(origin["pelvis"][1] - min(jo[:, 1])) + 0.02)
    model.finalizeFromProperties()
    model.initSystem()
    return model


def save_model(model: object, path: str | Path) -> Path:
    """Write the model as ``.osim`` XML."""
    path = Path(path)
    model.printToXML(str(path))  # type: ignore[attr-defined]
    return path
