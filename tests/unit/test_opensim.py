"""The OpenSim path: marker placement, the generated model, and OpenSim's scaling and inverse
kinematics checked against known joint angles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmrflow.jobs.export.opensim import opensim_available
from hmrflow.jobs.export.opensim.markers import MARKER_NAMES, MARKERS
from hmrflow.jobs.export.opensim.model import COORDINATES, to_opensim
from hmrflow.priors.body_model import load_body_model

needs_opensim = pytest.mark.skipif(not opensim_available(), reason="opensim is not installed (pip install opensim)")


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("synthetic")


@pytest.fixture(scope="module")
def rest(body_model):
    """Template rest mesh (V, 3) and marker positions (M, 3), SMPL frame."""
    import torch

    from hmrflow.jobs.export.opensim.run import marker_vertex_ids

    with torch.no_grad():
        out = body_model(torch.eye(3).expand(1, 24, 3, 3).clone(), torch.zeros(1, 10))
    v = out.vertices[0].double().numpy()
    return v, v[marker_vertex_ids(body_model)], out.joints[0].double().numpy()


def _pos(rest, name: str) -> np.ndarray:
    return rest[1][MARKER_NAMES.index(name)]


def test_marker_names_are_unique_and_sided() -> None:
    assert len(set(MARKER_NAMES)) == len(MARKER_NAMES) == len(MARKERS)
    for m in MARKERS:
        if m.name[0] in "LR" and m.segment != "torso" and m.segment != "pelvis":
            assert m.segment.endswith("_" + m.name[0].lower()), m


def test_markers_sit_where_a_gait_lab_puts_them(rest) -> None:
    """Side, front/back and order along the limbs in the T-pose (x = left, y = up, z = forward)."""
    v, _, j = rest
    for s, sign in (("L", 1.0), ("R", -1.0)):
        assert sign * _pos(rest, f"{s}ASI")[0] > 0.05 and sign * _pos(rest, f"{s}PSI")[0] > 0.0
        assert _pos(rest, f"{s}ASI")[2] > j[0, 2] + 0.05 > _pos(rest, f"{s}PSI")[2] + 0.1
        # lateral markers outside the medial ones, on the same leg
        assert sign * (_pos(rest, f"{s}KNE")[0] - _pos(rest, f"{s}KNM")[0]) > 0.06
        assert sign * (_pos(rest, f"{s}ANK")[0] - _pos(rest, f"{s}MED")[0]) > 0.04
        knee = j[4 if s == "L" else 5]
        assert abs(_pos(rest, f"{s}KNE")[1] - knee[1]) < 0.03 and sign * _pos(rest, f"{s}KNM")[0] > 0.0
        # down the leg: hip > thigh > knee > shank > ankle > heel
        ys = [_pos(rest, f"{s}{n}")[1] for n in ("ASI", "THI", "KNE", "TIB", "ANK", "HEE")]
        assert all(a > b for a, b in zip(ys, ys[1:])), ys
        assert _pos(rest, f"{s}TOE")[2] > _pos(rest, f"{s}ANK")[2] + 0.08 > _pos(rest, f"{s}HEE")[2] + 0.1
        # arm in the T-pose: out to the side, the lateral epicondyle on top, the thumb side in front
        assert sign * _pos(rest, f"{s}FIN")[0] > sign * _pos(rest, f"{s}WRA")[0] > sign * _pos(rest, f"{s}ELB")[0] > 0.3
        assert _pos(rest, f"{s}ELB")[1] > _pos(rest, f"{s}ELM")[1] + 0.04
        assert _pos(rest, f"{s}WRA")[2] > _pos(rest, f"{s}WRB")[2] + 0.03
    assert _pos(rest, "C7")[2] < j[12, 2] < _pos(rest, "CLAV")[2]
    # every marker is on the skin: a mesh vertex farther from the body's axis than its joint
    assert np.isin(rest[1], v).all()


@needs_opensim
def test_model_has_standard_coordinates_and_its_markers_at_zero_pose(body_model) -> None:

    from hmrflow.jobs.export.opensim.run import marker_vertex_ids, opensim_model, shaped_body

    body = shaped_body(body_model, np.zeros(10), marker_vertex_ids(body_model))
    model = opensim_model("t", body)
    names = [model.getCoordinateSet().get(i).getName() for i in range(model.getCoordinateSet().getSize())]
    assert names == list(COORDINATES)
    for c in (
        "pelvis_tx",
        "pelvis_ty",
        "pelvis_tz",
        "knee_angle_r",
        "ankle_angle_l",
        "lumbar_extension",
        "arm_flex_r",
        "pro_sup_l",
    ):
        assert c in names
    state = model.initSystem()
    for q in names:
        model.getCoordinateSet().get(q).setValue(state, 0.0)
    ty = model.getCoordinateSet().get("pelvis_ty")
    model.realizePosition(state)
    # at zero the markers are where the body model puts them (arms hanging), relative to the root
    markers = model.getMarkerSet()
    for k, name in enumerate(MARKER_NAMES):
        p = markers.get(name).getLocationInGround(state)
        got = np.array([p.get(0), p.get(1), p.get(2)])
        want = to_opensim(body.markers[k])
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)
    assert ty.getValue(state) == 0.0


@needs_opensim
def test_coordinate_signs(body_model) -> None:
    """The signs of docs/opensim.md: +hip flexion moves the knee forward, +knee angle (flexion)
    the ankle backward, +ankle angle (dorsiflexion) the toes up, +arm_flex the elbow forward,
    +elbow_flex the wrist forward (X forward, Y up, Z right)."""
    from hmrflow.jobs.export.opensim.run import marker_vertex_ids, opensim_model, shaped_body

    model = opensim_model("t", shaped_body(body_model, np.zeros(10), marker_vertex_ids(body_model)))

    def marker_at(coord: str, deg: float, marker: str) -> np.ndarray:
        state = model.initSystem()
        model.getCoordinateSet().get(coord).setValue(state, np.radians(deg))
        model.realizePosition(state)
        p = model.getMarkerSet().get(marker).getLocationInGround(state)
        return np.array([p.get(0), p.get(1), p.get(2)])

    # + pelvis_tilt is posterior (the trunk goes back), + lumbar_extension leans the trunk back
    assert marker_at("pelvis_tilt", 20, "C7")[0] < marker_at("pelvis_tilt", 0, "C7")[0] - 0.1
    assert marker_at("lumbar_extension", 20, "C7")[0] < marker_at("lumbar_extension", 0, "C7")[0] - 0.1
    # + pelvis_rotation turns the body to its left (toward -Z): the right ASIS comes forward
    assert marker_at("pelvis_rotation", 20, "RASI")[0] > marker_at("pelvis_rotation", 0, "RASI")[0] + 0.02
    for side in "rl":
        s = side.upper()
        assert (
            marker_at(f"elbow_flex_{side}", 60, f"{s}WRA")[0] > marker_at(f"elbow_flex_{side}", 0, f"{s}WRA")[0] + 0.1
        )
        assert (
            marker_at(f"hip_flexion_{side}", 30, f"{s}KNE")[0] > marker_at(f"hip_flexion_{side}", 0, f"{s}KNE")[0] + 0.1
        )
        assert (
            marker_at(f"knee_angle_{side}", 40, f"{s}ANK")[0] < marker_at(f"knee_angle_{side}", 0, f"{s}ANK")[0] - 0.1
        )
        assert (
            marker_at(f"ankle_angle_{side}", 20, f"{s}TOE")[1]
            > marker_at(f"ankle_angle_{side}", 0, f"{s}TOE")[1] + 0.02
        )
        assert marker_at(f"arm_flex_{side}", 40, f"{s}ELB")[0] > marker_at(f"arm_flex_{side}", 0, f"{s}ELB")[0] + 0.1
        # adduction brings the knee toward the midline (Z = right)
        z0, z1 = (
            marker_at(f"hip_adduction_{side}", 0, f"{s}KNE")[2],
            marker_at(f"hip_adduction_{side}", 15, f"{s}KNE")[2],
        )
        assert (z1 < z0) if side == "r" else (z1 > z0)


@needs_opensim
def test_scaling_and_inverse_kinematics_recover_known_walking_angles(body_model, tmp_path: Path) -> None:
    """A walking body with known SMPL joint angles through the whole path (markers on its
    mesh, ScaleTool, InverseKinematicsTool): sagittal hip, knee and ankle within 4 deg RMSE."""
    import json

    from hmrflow.jobs.bench.opensim import sagittal_rmse
    from hmrflow.jobs.export.angles import poses_to_angles
    from hmrflow.jobs.export.opensim import export_opensim
    from hmrflow.jobs.export.opensim.run import read_storage
    from hmrflow.jobs.export.reading import TrackData
    from hmrflow.priors.motion_library import MOTIONS

    rng = np.random.default_rng(7)
    mot = MOTIONS["walk"](rng, 2.0, 30.0, speed=1.2, direction=60.0)
    t = len(mot.poses)
    poses = mot.poses.reshape(t, 72)
    betas = (rng.normal(size=10) * 0.8).astype(np.float32)
    track = TrackData(
        track_id=3,
        frame_idx=np.arange(t) + 10,
        pts=(np.arange(t) + 10) / 30.0,
        poses=poses,
        transl=mot.trans,
        betas=betas,
        observed=np.ones(t, bool),
        confidence=np.ones(t, np.float32),
        world_orient=poses[:, :3].copy(),
        world_transl=mot.trans.copy(),
    )
    files = export_opensim(track, "walk", tmp_path, body_model)
    folder = tmp_path / "walk_track3_opensim"
    # every file docs/opensim.md lists
    listed = (
        "model.osim",
        "static.trc",
        "model_scaled.osim",
        "scale_setup.xml",
        "scale_factors.xml",
        "scale_report.json",
        "markers.trc",
        "ik_setup.xml",
        "ik.mot",
        "ik_marker_errors.sto",
        "ik_report.json",
        "opensim.log",
    )
    assert sorted(p.name for p in files) == sorted(listed)
    trc = (folder / "markers.trc").read_text().splitlines()
    assert trc[2].split("\t")[4] == "mm"
    first = trc[6].split("\t")
    assert int(first[0]) == 11 and abs(float(first[1]) - 10 / 30.0) < 1e-6  # Frame# = frame_idx + 1, Time = pts
    ik = read_storage(folder / "ik.mot")
    np.testing.assert_allclose(ik["time"], track.pts, atol=1e-6)
    rmse = sagittal_rmse(ik, poses_to_angles(poses))
    assert max(rmse.values()) < 4.0, rmse
    # the pelvis follows the world root: walking 1.2 m/s for 2 s covers about 2.4 m on the ground
    step = np.hypot(np.diff(ik["pelvis_tx"]), np.diff(ik["pelvis_tz"])).sum()
    assert 1.9 < step < 3.0, step
    # the heading (60 deg about the vertical in the world) is pelvis_rotation's mean, the
    # world's z axis being OpenSim's X
    assert abs(np.mean(ik["pelvis_rotation"]) - 60.0) < 10.0
    for c in COORDINATES:
        if not c.startswith("pelvis_t"):
            assert np.abs(np.diff(ik[c])).max() < 20.0, c  # continuous
    ik_report = json.loads((folder / "ik_report.json").read_text())
    assert ik_report["marker_error_rms_m"]["median"] < 0.03
    scale = json.loads((folder / "scale_report.json").read_text())
    assert set(scale["scale_factors"]) >= {"pelvis", "femur_r", "tibia_l", "torso", "humerus_r"}
    assert 30.0 < scale["mass_kg"] < 150.0


def test_cli_without_opensim_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from hmrflow.jobs.cli import main
    from hmrflow.jobs.export import opensim as osim_pkg

    monkeypatch.setattr(osim_pkg, "opensim_available", lambda: False)
    (tmp_path / "v").mkdir()
    assert main(["export", str(tmp_path), "--format", "opensim"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install opensim" in err[0]


@needs_opensim
def test_cli_opensim_export_of_a_pipeline_output_in_the_camera_frame(tmp_path: Path, capsys) -> None:
    """``hmrflow export OUT --format opensim --frame camera`` on a written output: one folder
    per track, one IK row per track row, a body standing still comes out standing."""
    from hmrflow.jobs.cli import main
    from hmrflow.jobs.export.opensim.run import read_storage
    from tests.unit.test_export import make_sequence, write_output

    rng = np.random.default_rng(3)
    seq = make_sequence(rng, 2, np.arange(5, 17))
    seq.rotmats[:, 1:] = np.eye(3)  # standing still, upright in the camera
    out = write_output(tmp_path, [seq])
    dest = tmp_path / "exp"
    assert main(["export", str(out), "--format", "opensim", "--frame", "camera", "--dest", str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    assert any(p.endswith("clip_track2_opensim/ik.mot") for p in printed)
    ik = read_storage(dest / "clip_track2_opensim" / "ik.mot")
    assert len(ik["time"]) == 12
    for c in ("knee_angle_r", "hip_flexion_l", "ankle_angle_r"):
        assert np.abs(ik[c]).max() < 8.0, (c, ik[c])


def test_marker_prefers_skin_that_moves_with_its_segment_alone() -> None:
    """Of two vertices on a marker's ray, the one skinned to its segment alone is taken even
    when a half-blended one lies farther out; with no such vertex, the farthest one is."""
    from hmrflow.jobs.export.opensim import markers as mk
    from hmrflow.priors.skeleton import JOINT_INDEX

    rule = next(m for m in mk.MARKERS if m.name == "LTHI")
    j = np.zeros((24, 3))
    j[JOINT_INDEX["left_hip"]] = [0.1, 0.0, 0.0]
    j[JOINT_INDEX["left_knee"]] = [0.1, -0.4, 0.0]
    anchor = rule.anchor(j, rule.side)
    verts = np.array([anchor + [0.05, 0.0, 0.0], anchor + [0.07, 0.0, 0.0]])
    w = np.zeros((2, 24))
    w[0, JOINT_INDEX["left_hip"]] = 1.0
    w[1, JOINT_INDEX["left_hip"]] = 0.5
    w[1, JOINT_INDEX["pelvis"]] = 0.45
    w[1, JOINT_INDEX["spine1"]] = 0.05

    def pick(weights: np.ndarray) -> int:
        rules = mk.MARKERS
        try:
            mk.MARKERS = (rule,)
            return int(mk.select_vertices(verts, j, weights)[0])
        finally:
            mk.MARKERS = rules

    assert pick(w) == 0
    w[0] = w[1]
    assert pick(w) == 1


@needs_opensim
def test_shape_model_recovers_walking_angles_and_replaces_old_results(body_model, tmp_path: Path) -> None:
    """``model="shape"``: the model built from the track's own shape (no ScaleTool), sagittal
    angles within 4 deg RMSE; an earlier result in the folder is replaced as a whole."""
    import json

    from hmrflow.jobs.bench.opensim import sagittal_rmse
    from hmrflow.jobs.export.angles import poses_to_angles
    from hmrflow.jobs.export.opensim import export_opensim
    from hmrflow.jobs.export.opensim.run import read_storage
    from hmrflow.jobs.export.reading import TrackData
    from hmrflow.priors.motion_library import MOTIONS

    rng = np.random.default_rng(8)
    mot = MOTIONS["walk"](rng, 1.5, 30.0, speed=1.4, direction=-120.0)
    t = len(mot.poses)
    poses = mot.poses.reshape(t, 72)
    track = TrackData(
        track_id=5,
        frame_idx=np.arange(t),
        pts=np.arange(t) / 30.0,
        poses=poses,
        transl=mot.trans,
        betas=(rng.normal(size=10) * 1.2).astype(np.float32),
        observed=np.ones(t, bool),
        confidence=np.ones(t, np.float32),
        world_orient=poses[:, :3].copy(),
        world_transl=mot.trans.copy(),
    )
    old = tmp_path / "walk_track5_opensim"
    old.mkdir()
    (old / "static.trc").write_text("from an earlier run")
    files = export_opensim(track, "walk", tmp_path, body_model, model="shape")
    names = sorted(p.name for p in files)
    assert "static.trc" not in names and "scale_setup.xml" not in names and "model_scaled.osim" in names
    assert not (tmp_path / "walk_track5_opensim.partial").exists()
    rmse = sagittal_rmse(read_storage(old / "ik.mot"), poses_to_angles(poses))
    assert max(rmse.values()) < 4.0, rmse
    report = json.loads((old / "scale_report.json").read_text())
    assert report["segments"]["femur_r"]["length_m"] > 0.25
    assert json.loads((old / "ik_report.json").read_text())["model"] == "shape"
