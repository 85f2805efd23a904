"""The procedural body model: closed mesh, SMPL's arrays, plausible proportions and rigging."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hmrflow.priors import synthetic_body as sb
from hmrflow.priors.safe_pickle import load_smpl_pickle
from hmrflow.priors.skeleton import JOINT_INDEX as JI
from hmrflow.priors.skeleton import PARENTS


@pytest.fixture(scope="module")
def model() -> dict:
    return sb.make_synthetic_body_model(seed=0)


def test_arrays_have_smpl_keys_and_shapes(model):
    v = model["v_template"]
    n = v.shape[0]
    assert 3000 <= n <= 5000
    assert model["shapedirs"].shape == (n, 3, 10)
    assert model["posedirs"].shape == (n, 3, 207)
    assert model["J_regressor"].shape == (24, n) and sp.issparse(model["J_regressor"])
    assert model["weights"].shape == (n, 24)
    np.testing.assert_array_equal(model["kintree_table"], np.stack([PARENTS, np.arange(24)]))
    assert model["f"].shape[1] == 3 and model["f"].dtype == np.int64
    assert model["f"].min() == 0 and model["f"].max() == n - 1  # every vertex used


def test_mesh_is_closed_oriented_outward_and_genus_zero(model):
    v, f = model["v_template"], model["f"]
    _, counts = sb.edge_face_counts(f)
    assert (counts == 2).all()  # every edge shared by exactly two faces
    assert sb.is_watertight(f)  # ... with opposite directions (consistent orientation)
    edges = len(counts)
    assert len(v) - edges + len(f) == 2  # Euler characteristic of a sphere: one closed surface
    tri = v[f]
    signed_vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert 0.045 < signed_vol < 0.09  # positive = normals outward; 45-90 litres, an adult
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert areas.min() > 1e-7  # no degenerate triangles


def test_watertight_check_detects_a_hole_and_a_flip(model):
    f = model["f"]
    assert not sb.is_watertight(f[1:])
    flipped = f.copy()
    flipped[0] = flipped[0, ::-1]
    assert not sb.is_watertight(flipped)


def test_proportions_like_smpl_rest_pose(model):
    v, J = model["v_template"], model["J"]
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.62 < height < 1.80
    assert np.linalg.norm(J[JI["pelvis"]]) < 0.3  # pelvis near the origin
    assert v[:, 1].max() > 0.45 and v[:, 1].min() < -1.1  # y up
    # arms out to the sides, left = +x, similar span to height
    assert J[JI["left_wrist"], 0] > 0.6 and J[JI["right_wrist"], 0] < -0.6
    assert abs(J[JI["left_wrist"], 1] - J[JI["left_shoulder"], 1]) < 0.05
    span = v[:, 0].max() - v[:, 0].min()
    assert 0.9 * height < span < 1.1 * height
    # faces +z: toes and nose in front of the ankles / head joint
    assert J[JI["left_foot"], 2] > J[JI["left_ankle"], 2] + 0.08
    ids = sb.guess_vertex_ids(v, J)
    assert v[ids["nose"], 2] > J[JI["head"], 2] + 0.05
    # left/right symmetric
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    from scipy.spatial import cKDTree

    d, _ = cKDTree(v).query(mirrored)
    assert np.median(d) < 0.01


def test_skinning_weights_are_convex_and_local(model):
    w, v = model["weights"], model["v_template"]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-9)
    # finger tips follow the hand chain only, feet the leg chain only
    tip = np.argmax(v[:, 0])
    assert w[tip, [JI["left_wrist"], JI["left_hand"]]].sum() > 0.99
    sole = np.argmin(v[:, 1])
    leg = [JI[n] for n in ("left_ankle", "left_foot", "right_ankle", "right_foot")]
    assert w[sole, leg].sum() > 0.99
    # a mid-forearm vertex ring belongs to the elbow bone
    mid = 0.5 * (model["J"][JI["left_elbow"]] + model["J"][JI["left_wrist"]])
    ring = np.linalg.norm(v - mid, axis=1) < 0.05
    assert ring.sum() > 5 and (w[ring, JI["left_elbow"]] > 0.9).all()


def test_joint_regressor_is_convex_and_reproduces_rest_skeleton(model):
    R = model["J_regressor"].toarray()
    assert (R >= 0).all()
    np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-9)
    err = np.linalg.norm(R @ model["v_template"] - sb.rest_skeleton(0), axis=1)
    assert err.max() < 0.01  # < 1 cm
    assert ((R > 0).sum(1) >= 4).all()  # spread over several vertices


def test_shape_directions_are_structured_not_noise(model):
    v, S = model["v_template"], model["shapedirs"]
    height = lambda x: x[:, 1].max() - x[:, 1].min()  # noqa: E731
    width = lambda x: x[:, 0].max() - x[:, 0].min()  # noqa: E731
    h0, w0 = height(v), width(v)
    assert height(v + 2 * S[:, :, 0]) - h0 > 0.12  # stature
    assert height(v + S[:, :, 2]) - h0 > 0.04  # leg length
    assert width(v + S[:, :, 3]) - w0 > 0.07 and abs(height(v + S[:, :, 3]) - h0) < 1e-6  # arm length
    assert width(v + S[:, :, 4]) - w0 > 0.035  # shoulder width
    # every direction is smooth over the mesh: neighbours move alike
    f = model["f"]
    for k in range(10):
        d = S[:, :, k]
        edge_diff = np.linalg.norm(d[f[:, 0]] - d[f[:, 1]], axis=1)
        assert np.abs(d).max() > 0.003, k
        assert edge_diff.max() < 0.4 * np.linalg.norm(d, axis=1).max() + 1e-9, k
    assert len(sb.SHAPE_DIRECTIONS) == 10


def test_pose_correctives_are_small_bulges_on_the_diagonal(model):
    P = model["posedirs"]
    diag = np.zeros(207, dtype=bool)
    for j in range(23):
        diag[9 * j + np.array([0, 4, 8])] = True
    assert np.abs(P[:, :, ~diag]).max() == 0.0
    assert 0.001 < np.abs(P).max() < 0.01
    # a 90 degree knee bend (1 - cos = 1 -> -trace/2 ... feature = R - I) swells near the knee only
    knee = JI["left_knee"]
    feat = np.zeros(207)
    R = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    feat[9 * (knee - 1) : 9 * knee] = (R - np.eye(3)).ravel()
    off = np.linalg.norm(P @ feat, axis=1)
    near = np.linalg.norm(model["v_template"] - model["J"][knee], axis=1) < 0.08
    assert off[near].max() > 0.005 and off[~near].max() < 0.5 * off[near].max()


def test_deterministic_and_seeded(model):
    again = sb.make_synthetic_body_model(seed=0)
    for k in ("v_template", "shapedirs", "weights", "f"):
        np.testing.assert_array_equal(again[k], model[k])
    other = sb.make_synthetic_body_model(seed=3)
    assert sb.is_watertight(other["f"])
    assert not np.array_equal(other["J"], model["J"])


def test_vertex_ids_cover_smplx_extra_joints(model):
    ids = sb.guess_vertex_ids(model["v_template"], model["J"])
    names = {
        "nose",
        "reye",
        "leye",
        "rear",
        "lear",
        "LBigToe",
        "LSmallToe",
        "LHeel",
        "RBigToe",
        "RSmallToe",
        "RHeel",
    } | {f"{s}{t}" for s in "lr" for t in ("thumb", "index", "middle", "ring", "pinky")}
    assert set(ids) == names
    v = model["v_template"]
    assert v[ids["leye"], 0] > 0 > v[ids["reye"], 0]
    assert v[ids["LHeel"], 2] < v[ids["LBigToe"], 2] - 0.15
    assert v[ids["lmiddle"], 0] > model["J"][JI["left_hand"], 0] + 0.05
    assert len({ids[f"l{t}"] for t in ("thumb", "index", "middle", "ring", "pinky")}) == 5


def test_write_smpl_pickle_round_trips_through_the_safe_loader(model, tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    sb.write_smpl_pickle(model, path)
    back = load_smpl_pickle(path)
    assert set(back) == set(model)
    np.testing.assert_array_equal(back["v_template"], model["v_template"])
    np.testing.assert_array_equal(back["J_regressor"].toarray(), model["J_regressor"].toarray())
    assert not list(tmp_path.glob(".tmp-*"))
