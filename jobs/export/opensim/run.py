"""Drive the OpenSim path for one track: markers, generic model, ScaleTool, InverseKinematicsTool.

OpenSim's own tools do the scaling and the inverse kinematics, so a lab can rerun or audit
every step in OpenSim with the set-up files written beside the results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hmrflow.jobs.export.opensim.markers import MARKERS, select_vertices
from hmrflow.jobs.export.opensim.model import COORDINATES, SEGMENTS, build_model, save_model, to_opensim
from hmrflow.jobs.export.reading import TrackData
from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)

#: Frames of the static trial (one still pose; OpenSim averages over the time range).
_STATIC_FRAMES = 10
#: Body density (kg/m^3) turning the mesh volume into a mass.
_DENSITY = 1000.0
#: Marker pairs whose distances set each body's scale factor (ScaleTool "measurements").
_MEASUREMENTS: tuple[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]], ...] = (
    ("pelvis", (("LASI", "RASI"), ("LPSI", "RPSI"), ("LASI", "LPSI"), ("RASI", "RPSI")), ("pelvis",)),
    ("torso", (("C7", "T10"), ("CLAV", "STRN"), ("LSHO", "RSHO"), ("C7", "CLAV")), ("torso",)),
    *(
        m
        for s, S in (("r", "R"), ("l", "L"))
        for m in (
            (f"thigh_{s}", ((f"{S}ASI", f"{S}KNE"), (f"{S}ASI", f"{S}KNM")), (f"femur_{s}",)),
            (f"shank_{s}", ((f"{S}KNE", f"{S}ANK"), (f"{S}KNM", f"{S}MED")), (f"tibia_{s}", f"talus_{s}")),
            (f"foot_{s}", ((f"{S}HEE", f"{S}TOE"), (f"{S}HEE", f"{S}5MT")), (f"calcn_{s}", f"toes_{s}")),
            (f"upper_arm_{s}", ((f"{S}SHO", f"{S}ELB"), (f"{S}SHO", f"{S}ELM")), (f"humerus_{s}",)),
            (f"forearm_{s}", ((f"{S}ELB", f"{S}WRA"), (f"{S}ELM", f"{S}WRB")), (f"ulna_{s}", f"radius_{s}")),
            (f"hand_{s}", ((f"{S}WRA", f"{S}FIN"), (f"{S}WRB", f"{S}FIN")), (f"hand_{s}",)),
        )
    ),
)


class OpenSimUnavailableError(HmrflowError, RuntimeError):
    """The ``opensim`` package is not installed (it has wheels for CPython 3.11 on PyPI)."""


def _add_marker_tasks(osim: Any, tasks: Any) -> None:
    """Append one weighted IK marker task per virtual marker to an OpenSim IKTaskSet."""
    for m in MARKERS:
        task = osim.IKMarkerTask()
        task.setName(m.name)
        task.setWeight(m.weight)
        task.setApply(True)
        tasks.cloneAndAppend(task)


def opensim_available() -> bool:
    """True when ``import opensim`` works."""
    try:
        import opensim  # noqa: F401
    except ImportError:
        return False
    return True


def _opensim() -> Any:
    try:
        import opensim as osim
    except ImportError as e:
        raise OpenSimUnavailableError(
            f"--format opensim needs the opensim package (pip install opensim; CPython 3.11): {e}"
        ) from None
    # OpenSim logs every tool step to the console and to ./opensim.log; hmrflow reports itself
    osim.Logger.setLevelString("error")
    osim.Logger.removeFileSink()
    return osim


@contextlib.contextmanager
def _console_to(path: Path) -> Iterator[None]:
    """Send the process's C-level stdout to ``path`` while OpenSim's tools run (they print
    model summaries with std::cout, past the Logger); the log stays beside the results."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def model_pose_rotmats() -> np.ndarray:
    """(24, 3, 3) the model's default pose in SMPL: the rest pose with the arms hanging
    (shoulders turned 90 degrees about the forward axis, palms facing the thighs)."""
    from scipy.spatial.transform import Rotation

    from hmrflow.priors.skeleton import JOINT_INDEX

    rot = np.tile(np.eye(3), (24, 1, 1))
    rot[JOINT_INDEX["left_shoulder"]] = Rotation.from_euler("z", -90, degrees=True).as_matrix()
    rot[JOINT_INDEX["right_shoulder"]] = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    return rot


def _forward(body_model: Any, rotmats: np.ndarray, betas: np.ndarray, transl: np.ndarray | None = None) -> Any:
    import torch

    with torch.no_grad():
        return body_model(
            torch.tensor(np.asarray(rotmats, np.float32)),
            torch.tensor(np.asarray(betas, np.float32)),
            None if transl is None else torch.tensor(np.asarray(transl, np.float32)),
        )


def marker_vertex_ids(body_model: Any) -> np.ndarray:
    """(M,) the body model's vertex of every marker, chosen on its template rest mesh."""
    res = _forward(body_model, np.eye(3)[None, None].repeat(24, 1), np.zeros((1, 10)))
    weights = body_model.layer.lbs_weights.detach().cpu().numpy()
    return select_vertices(res.vertices[0].double().numpy(), res.joints[0].double().numpy(), weights)


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (m^3) of a closed triangle mesh: vertices (V, 3), faces (F, 3)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


@dataclass(frozen=True)
class ShapedBody:
    """One shape in the model's default pose (SMPL frame, root joint at the origin).

    joints: (24, 3); markers: (M, 3) in :data:`MARKERS` order; mass_kg; height_m (top of the
    mesh minus its bottom, arms hanging).
    """

    joints: np.ndarray
    markers: np.ndarray
    mass_kg: float
    height_m: float


def shaped_body(body_model: Any, betas: np.ndarray, ids: np.ndarray) -> ShapedBody:
    """The body of ``betas`` (10,) in the model's default pose."""
    res = _forward(body_model, model_pose_rotmats()[None], np.asarray(betas, np.float64)[None, :10])
    v = res.vertices[0].double().numpy()
    j = res.joints[0].double().numpy()
    root = j[0].copy()
    rest = _forward(body_model, np.eye(3)[None, None].repeat(24, 1), np.asarray(betas, np.float64)[None, :10])
    mass = _DENSITY * mesh_volume(rest.vertices[0].double().numpy(), np.asarray(body_model.faces))
    return ShapedBody(j - root, v[ids] - root, mass, float(v[:, 1].max() - v[:, 1].min()))


def opensim_model(name: str, body: ShapedBody) -> Any:
    """The OpenSim model of ``body`` with the marker set attached."""
    markers = {m.name: (m.segment, body.markers[k]) for k, m in enumerate(MARKERS)}
    return build_model(name, body.joints, markers, body.mass_kg)


def track_markers(track: TrackData, body_model: Any, ids: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(T, M, 3) marker positions in the OpenSim ground frame, metres.

    ``track``'s camera-frame ``poses``/``transl`` are used as they are; pass the output of
    :func:`hmrflow.jobs.export.world_as_camera` for the world frame (the camera-to-upright
    turn ``diag(1, -1, -1)`` is applied here, then SMPL axes -> OpenSim axes).
    """
    from hmrflow.jobs.export.angles import CAMERA_TO_YUP

    t = len(track)
    out = np.zeros((t, len(ids), 3), np.float64)
    rot = track.rotmats()
    betas = np.broadcast_to(np.asarray(track.betas, np.float64)[:10], (t, 10))
    for a in range(0, t, chunk):
        b = min(t, a + chunk)
        res = _forward(body_model, rot[a:b], betas[a:b], np.asarray(track.transl[a:b], np.float64))
        out[a:b] = res.vertices[:, ids].double().numpy()
    return to_opensim(out @ CAMERA_TO_YUP.T)


def _array_str(osim: Any, items: list[str]) -> Any:
    arr = osim.ArrayStr()
    for it in items:
        arr.append(it)
    return arr


def run_scaling(
    osim: Any, generic: Path, static_trc: Path, body: ShapedBody, folder: Path, t_end: float
) -> tuple[Path, dict[str, Any]]:
    """Scale ``generic`` to the static trial with OpenSim's ScaleTool (measurement-based scale
    factors from marker pairs, then marker placement).  Returns the scaled model and a report."""
    tool = osim.ScaleTool()
    tool.setName("hmrflow_scale")
    tool.setSubjectMass(body.mass_kg)
    tool.setSubjectHeight(body.height_m * 1000.0)
    tool.getGenericModelMaker().setModelFileName(str(generic))
    scaled = folder / "model_scaled.osim"
    times = osim.ArrayDouble()
    times.append(0.0)
    times.append(t_end)
    ms = tool.getModelScaler()
    ms.setApply(True)
    ms.setScalingOrder(_array_str(osim, ["measurements"]))
    ms.setMarkerFileName(str(static_trc))
    ms.setTimeRange(times)
    ms.setPreserveMassDist(True)
    ms.setOutputModelFileName(str(scaled))
    ms.setOutputScaleFileName(str(folder / "scale_factors.xml"))
    mset = ms.getMeasurementSet()
    for name, pairs, bodies in _MEASUREMENTS:
        meas = osim.Measurement()
        meas.setName(name)
        meas.setApply(True)
        for m1, m2 in pairs:
            meas.getMarkerPairSet().cloneAndAppend(osim.MarkerPair(m1, m2))
        for b in bodies:
            bs = osim.BodyScale()
            bs.setName(b)
            bs.setAxisNames(_array_str(osim, ["X", "Y", "Z"]))
            meas.getBodyScaleSet().cloneAndAppend(bs)
        mset.cloneAndAppend(meas)
    mp = tool.getMarkerPlacer()
    mp.setApply(True)
    mp.setStaticPoseFileName(str(static_trc))
    mp.setTimeRange(times)
    mp.setOutputModelFileName(str(scaled))
    mp.setMaxMarkerMovement(-1.0)
    # the static trial is the model's default pose by construction, so every joint coordinate
    # is held at zero while the markers are placed (as a lab enters a known static posture);
    # left free, the hinge joints absorb scaling differences and bake offsets into the markers
    tasks = mp.getIKTaskSet()
    _add_marker_tasks(osim, tasks)
    for seg in SEGMENTS[1:]:
        for c in seg.coordinates:
            ctask = osim.IKCoordinateTask()
            ctask.setName(c.name)
            ctask.setApply(True)
            ctask.setWeight(1000.0)
            ctask.setValueType(osim.IKCoordinateTask.ManualValue)
            ctask.setValue(0.0)
            tasks.cloneAndAppend(ctask)
    tool.printToXML(str(folder / "scale_setup.xml"))
    with _console_to(folder / "opensim.log"):
        ok = tool.run()
    if not ok:
        raise HmrflowError(f"{folder}: OpenSim's ScaleTool failed (set-up in scale_setup.xml, log in opensim.log)")
    factors = {}
    scale_set = osim.ScaleSet(str(folder / "scale_factors.xml"))
    for i in range(scale_set.getSize()):
        sc = scale_set.get(i)
        f = sc.getScaleFactors()
        factors[sc.getSegmentName()] = [round(float(f.get(k)), 4) for k in range(3)]
    report = {
        "tool": "OpenSim ScaleTool (measurements, then marker placement)",
        "mass_kg": round(body.mass_kg, 2),
        "height_m": round(body.height_m, 3),
        "scale_factors": factors,
        "measurements": {name: [list(p) for p in pairs] for name, pairs, _ in _MEASUREMENTS},
    }
    return scaled, report


def run_ik(osim: Any, model_file: Path, trc: Path, t0: float, t1: float, folder: Path) -> tuple[Path, dict[str, Any]]:
    """OpenSim's InverseKinematicsTool over ``[t0, t1]``; returns ``ik.mot`` and a report."""
    model = osim.Model(str(model_file))
    model.initSystem()
    tool = osim.InverseKinematicsTool()
    tool.setName("hmrflow_ik")
    tool.set_model_file(str(model_file))
    tool.setMarkerDataFileName(str(trc))
    tool.setStartTime(t0)
    tool.setEndTime(t1)
    mot = folder / "ik.mot"
    tool.setOutputMotionFileName(str(mot))
    tool.set_report_errors(True)
    tool.setResultsDir(str(folder))
    tasks = tool.getIKTaskSet()
    _add_marker_tasks(osim, tasks)
    tool.printToXML(str(folder / "ik_setup.xml"))
    tool.setModel(model)
    with _console_to(folder / "opensim.log"):
        ok = tool.run()
    if not ok:
        raise HmrflowError(
            f"{folder}: OpenSim's InverseKinematicsTool failed (set-up in ik_setup.xml, log in opensim.log)"
        )
    errors_file = folder / "hmrflow_ik_ik_marker_errors.sto"
    report: dict[str, Any] = {"tool": "OpenSim InverseKinematicsTool", "time_range_s": [t0, t1]}
    if errors_file.exists():
        target = folder / "ik_marker_errors.sto"
        errors_file.replace(target)
        table = read_storage(target)
        rms = table["marker_error_RMS"]
        mx = table["marker_error_max"]
        report.update(
            {
                "marker_error_rms_m": {
                    "median": round(float(np.median(rms)), 4),
                    "p95": round(float(np.percentile(rms, 95)), 4),
                },
                "marker_error_max_m": round(float(np.max(mx)), 4),
                "frames": int(len(rms)),
            }
        )
    return mot, report


def read_storage(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of an OpenSim ``.mot``/``.sto`` storage file (text after ``endheader``)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    names = lines[k + 1].split("\t")
    rows = [ln.split("\t") for ln in lines[k + 2 :] if ln.strip()]
    data = np.array(rows, np.float64).reshape(len(rows), len(names))
    return {n.strip(): data[:, i] for i, n in enumerate(names)}


def _write_static_trc(path: Path, body: ShapedBody) -> float:
    """The still pose as ``_STATIC_FRAMES`` frames at 30 fps, standing on y = 0; returns its end time."""
    from hmrflow.jobs.export.trc import write_trc

    pos = to_opensim(body.markers)
    times = np.arange(_STATIC_FRAMES) / 30.0
    write_trc(
        path,
        [m.name for m in MARKERS],
        np.broadcast_to(pos, (_STATIC_FRAMES, *pos.shape)),
        np.arange(_STATIC_FRAMES),
        times,
        30.0,
        convert=False,
    )
    return float(times[-1])


#: How the model of a track is made: ``scaled`` (OpenSim's ScaleTool on the generic model,
#: the lab workflow) or ``shape`` (built directly from the track's own body shape).
MODEL_KINDS: tuple[str, ...] = ("scaled", "shape")


def _shape_report(subject: ShapedBody, generic: ShapedBody) -> dict[str, Any]:
    """Mass, height and segment lengths of a model built from the track's shape, with their
    ratio to the generic model's (what ScaleTool's factors would approximate)."""
    from hmrflow.priors.skeleton import JOINT_INDEX

    lengths: dict[str, Any] = {}
    for seg in SEGMENTS:
        if seg.distal_joint is None:
            continue
        a, b = JOINT_INDEX[seg.origin_joint], JOINT_INDEX[seg.distal_joint]
        own = float(np.linalg.norm(subject.joints[b] - subject.joints[a]))
        ref = float(np.linalg.norm(generic.joints[b] - generic.joints[a]))
        lengths[seg.name] = {"length_m": round(own, 4), "ratio_to_generic": round(own / ref, 4) if ref else None}
    return {
        "tool": "none: model_scaled.osim is built from the track's own shape (betas); joint centres exact",
        "mass_kg": round(subject.mass_kg, 2),
        "height_m": round(subject.height_m, 3),
        "segments": lengths,
    }


def export_opensim(track: TrackData, video_id: str, dest: Path, body_model: Any, model: str = "scaled") -> list[Path]:
    """Run the OpenSim path for one track (world frame when the output has one).

    Writes ``dest/<video_id>_track<id>_opensim/`` (module docstring) and returns its files.
    ``model``: ``scaled`` (generic model + ScaleTool on a static trial of the track's body) or
    ``shape`` (the model built from the track's shape; no ScaleTool, so no ``static.trc``,
    ``scale_setup.xml`` or ``scale_factors.xml``).  The folder is written beside the old one
    and swapped in when complete, so a failed run leaves the previous results whole.
    """
    import shutil

    from hmrflow.jobs.export import world_as_camera
    from hmrflow.jobs.export.positions import rest_joints
    from hmrflow.jobs.export.trc import write_trc

    if model not in MODEL_KINDS:
        raise ValueError(f"unknown OpenSim model kind {model!r}: one of {', '.join(MODEL_KINDS)}")
    if len(track) == 0:
        raise ValueError(f"{video_id} track {track.track_id}: no rows to export")
    osim = _opensim()
    final = Path(dest) / f"{video_id}_track{track.track_id}_opensim"
    folder = final.with_name(final.name + ".partial")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if track.has_world:
        track = world_as_camera(track, rest_joints(track, body_model)[0])
    else:
        log.warning("%s track %d: no world frame in the output; the camera frame is used", video_id, track.track_id)
    ids = marker_vertex_ids(body_model)
    generic = shaped_body(body_model, np.zeros(10), ids)
    generic_file = save_model(opensim_model("hmrflow_generic", generic), folder / "model.osim")
    subject = shaped_body(body_model, track.betas, ids)
    if model == "scaled":
        static_trc = folder / "static.trc"
        t_static = _write_static_trc(static_trc, subject)
        scaled, scale_report = run_scaling(osim, generic_file, static_trc, subject, folder, t_static)
    else:
        scaled = save_model(
            opensim_model(f"hmrflow_{video_id}_track{track.track_id}", subject), folder / "model_scaled.osim"
        )
        scale_report = _shape_report(subject, generic)
    names = [m.name for m in MARKERS]
    pos = track_markers(track, body_model, ids)
    trc = write_trc(folder / "markers.trc", names, pos, track.frame_idx, track.pts, track.frame_rate, convert=False)
    mot, ik_report = run_ik(osim, scaled, trc, float(track.pts[0]), float(track.pts[-1]), folder)
    _tidy_angles(mot)
    (folder / "scale_report.json").write_text(json.dumps(scale_report, indent=2) + "\n", encoding="utf-8")
    ik_report["coordinates"] = list(COORDINATES)
    ik_report["model"] = model
    ik_report["observed_share"] = round(float(np.mean(track.observed)), 4)
    (folder / "ik_report.json").write_text(json.dumps(ik_report, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    folder.rename(final)
    log.info("%s track %d: OpenSim model (%s), IK in %s", video_id, track.track_id, model, final)
    return sorted(p for p in final.iterdir() if p.is_file())


def _tidy_angles(mot: Path) -> None:
    """Shift each rotational coordinate of ``mot`` by whole turns so its median lies within
    +-180 degrees (the convention of every hmrflow export); IK itself is continuous."""
    text = mot.read_text(encoding="utf-8").splitlines()
    k = next(i for i, ln in enumerate(text) if ln.strip().lower() == "endheader")
    names = [n.strip() for n in text[k + 1].split("\t")]
    rot_cols = [i for i, n in enumerate(names) if n in COORDINATES and not n.startswith("pelvis_t")]
    rows = [ln.split("\t") for ln in text[k + 2 :] if ln.strip()]
    if not rows:
        return
    data = np.array(rows, np.float64)
    for i in rot_cols:
        data[:, i] -= 360.0 * np.round(np.median(data[:, i]) / 360.0)
    body = ["\t".join("%.8f" % v for v in r) for r in data]
    mot.write_text("\n".join(text[: k + 2] + body) + "\n", encoding="utf-8")


__all__ = ["SEGMENTS", "export_opensim", "opensim_available", "OpenSimUnavailableError"]
