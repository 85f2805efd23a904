"""BodyModel (smplx wrapper) and load_body_model: synthetic and SMPL-file sources agree, fp32, errors."""

from __future__ import annotations

import math
import pickle
import shutil
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hmrflow.jobs.cli import main as cli_main
from hmrflow.pipeline.errors import BodyModelError, UnsafeFileError
from hmrflow.priors import body_model as bmod
from hmrflow.priors.body_model import BodyModel, load_body_model
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.priors.skeleton import JOINT_INDEX as JI


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HMRFLOW_CACHE", str(d))
    mp.delenv("HMRFLOW_SMPL_DIR", raising=False)
    bmod._MEMO.clear()
    yield d
    mp.undo()
    bmod._MEMO.clear()


@pytest.fixture(scope="module")
def bm(cache_dir) -> BodyModel:
    return load_body_model("synthetic")


@pytest.fixture(scope="module")
def smpl_dir(cache_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("smpl")
    assert cli_main(["body-model", "make", str(d)]) == 0
    return d


def _random_pose(b: int, seed: int = 0, scale: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 72, generator=g) * scale


def test_synthetic_is_cached_on_disk(bm, cache_dir):
    files = list((cache_dir / "body_models").glob("synthetic_v*_seed0.npz"))
    assert len(files) == 1
    bmod._MEMO.clear()
    again = load_body_model("synthetic")  # now read from the npz
    assert again.sha256 == bm.sha256


def test_made_pickle_loads_through_smplx_like_synthetic(bm, smpl_dir):
    assert (smpl_dir / "SMPL_NEUTRAL.pkl").is_file()
    other = load_body_model(kind="smpl", path=str(smpl_dir))
    assert other.sha256 == bm.sha256 and other.n_vertices == bm.n_vertices
    poses, betas = _random_pose(5), torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    transl = torch.tensor([[0.1, -0.2, 3.0]]).repeat(5, 1)
    a = bm.forward_axis_angle(poses, betas, transl)
    b = other.forward_axis_angle(poses, betas, transl)
    torch.testing.assert_close(a.vertices, b.vertices)
    torch.testing.assert_close(a.joints, b.joints)
    # direct file path, and a config-like object
    direct = load_body_model("smpl", path=str(smpl_dir / "SMPL_NEUTRAL.pkl"))
    assert direct.sha256 == bm.sha256
    cfg = types.SimpleNamespace(kind="smpl", path=str(smpl_dir), gender="neutral")
    assert load_body_model(cfg).sha256 == bm.sha256


def test_env_var_and_official_file_name(bm, smpl_dir, tmp_path, monkeypatch):
    shutil.copy(smpl_dir / "SMPL_NEUTRAL.pkl", tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")
    monkeypatch.setenv("HMRFLOW_SMPL_DIR", str(tmp_path))
    assert load_body_model("smpl").sha256 == bm.sha256


def test_zero_pose_zero_betas_gives_template(bm):
    arrays = bmod.synthetic_model_arrays(0)
    out = bm(torch.eye(3).expand(2, 24, 3, 3), torch.zeros(2, 10), None)
    np.testing.assert_allclose(out.vertices[1].numpy(), arrays["v_template"], atol=1e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), arrays["J_regressor"] @ arrays["v_template"], atol=1e-5)
    assert out.vertices.shape == (2, bm.n_vertices, 3) and out.joints.shape == (2, 24, 3)
    assert out.extra_joints.shape == (2, 21, 3)


def test_height_grows_monotonically_with_beta0(bm):
    betas = torch.zeros(7, 10)
    betas[:, 0] = torch.linspace(-3, 3, 7)
    v = bm(torch.eye(3).expand(7, 24, 3, 3), betas).vertices
    height = (v[..., 1].max(1).values - v[..., 1].min(1).values).numpy()
    assert (np.diff(height) > 0.05).all()
    assert 1.3 < height[0] and height[-1] < 2.2


def test_elbow_rotation_moves_own_hand_only(bm):
    poses = torch.zeros(2, 72)
    poses[1, 3 * JI["left_elbow"] + 1] = math.pi / 2  # bend the left elbow 90 degrees about y
    out = bm.forward_axis_angle(poses)
    d = (out.joints[1] - out.joints[0]).norm(dim=-1)
    assert d[JI["left_wrist"]] > 0.2 and d[JI["left_hand"]] > 0.25
    for name in ("right_wrist", "right_hand", "left_elbow", "left_shoulder", "head", "left_foot", "pelvis"):
        assert d[JI[name]] < 1e-6, name
    dv = (out.vertices[1] - out.vertices[0]).norm(dim=-1)
    rest = bm.layer.v_template
    right_hand_verts = rest[:, 0] < -0.7
    left_hand_verts = rest[:, 0] > 0.7
    assert dv[right_hand_verts].max() < 1e-6
    assert dv[left_hand_verts].min() > 0.15
    # rest_joints(J) of the elbow: the wrist circles around it at the forearm length
    j = bm.rest_joints(torch.zeros(1, 10))[0]
    forearm = (j[JI["left_wrist"]] - j[JI["left_elbow"]]).norm()
    torch.testing.assert_close((out.joints[1, JI["left_wrist"]] - j[JI["left_elbow"]]).norm(), forearm)


def test_root_rotation_about_j0_and_translation(bm):
    betas = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    rot = torch.eye(3).repeat(3, 24, 1, 1)
    rot[:, 0] = axis_angle_to_matrix(torch.tensor([[0.0, 1.0, 0.0], [1.2, 0.0, 0.0], [0.3, -0.5, 2.0]]))
    transl = torch.tensor([[1.0, 2.0, 3.0]]).repeat(3, 1)
    out = bm(rot, betas, transl)
    j0 = bm.rest_joints(betas)[:, 0]
    torch.testing.assert_close(out.joints[:, 0], j0 + transl, atol=1e-5, rtol=0)


def test_rotmats_and_axis_angle_agree_any_batch(bm):
    for b in (1, 3, 17):
        poses = _random_pose(b, seed=b)
        betas = torch.randn(b, 10, generator=torch.Generator().manual_seed(b))
        a = bm.forward_axis_angle(poses, betas)
        r = bm(axis_angle_to_matrix(poses.reshape(b, 24, 3)), betas)
        torch.testing.assert_close(a.vertices, r.vertices)
    empty = bm(torch.zeros(0, 24, 3, 3), torch.zeros(0, 10))
    assert empty.vertices.shape == (0, bm.n_vertices, 3)
    with pytest.raises(ValueError, match="rotmats"):
        bm(torch.zeros(2, 23, 3, 3), torch.zeros(2, 10))


def test_fp32_under_bf16_autocast(bm):
    poses = _random_pose(4)
    ref = bm.forward_axis_angle(poses, torch.zeros(4, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bm.forward_axis_angle(poses.bfloat16(), torch.zeros(4, 10, dtype=torch.bfloat16))
        rest = bm.rest_joints(torch.zeros(4, 10))
    assert out.vertices.dtype == torch.float32 and out.joints.dtype == torch.float32
    assert rest.dtype == torch.float32
    # the only difference is the bf16 rounding of the inputs, not bf16 maths
    assert (out.vertices - ref.vertices).abs().max() < 0.02


def test_properties(bm):
    assert bm.faces.dtype == np.int64 and bm.faces.shape[1] == 3 and bm.faces.max() == bm.n_vertices - 1
    assert bm.parents[0] == -1 and bm.parents.shape == (24,)
    assert len(bm.sha256) == 64
    assert bm.device.type == "cpu" and bm.dtype == torch.float32


def test_missing_files_name_the_expected_file(cache_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HMRFLOW_SMPL_DIR", raising=False)
    with pytest.raises(BodyModelError, match="SMPL_NEUTRAL.pkl.*HMRFLOW_SMPL_DIR"):
        load_body_model("smpl")
    with pytest.raises(BodyModelError, match="SMPL_MALE.pkl") as err:
        load_body_model("smpl", path=str(tmp_path), gender="male")
    assert str(tmp_path) in str(err.value) and "--body-model" in str(err.value)
    with pytest.raises(BodyModelError, match="no such file"):
        load_body_model("smpl", path=str(tmp_path / "nope"))
    with pytest.raises(BodyModelError, match="unknown body model kind"):
        load_body_model("smplx")


def test_malformed_files_name_file_and_key(bm, tmp_path):
    arrays = dict(bmod.synthetic_model_arrays(0))
    del arrays["posedirs"]
    bad = tmp_path / "SMPL_NEUTRAL.pkl"
    bad.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(BodyModelError, match=r"SMPL_NEUTRAL\.pkl.*'posedirs'"):
        load_body_model("smpl", path=str(tmp_path))
    arrays = dict(bmod.synthetic_model_arrays(0))
    arrays["weights"] = arrays["weights"][:, :20]
    bad.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(BodyModelError, match="'weights' has shape"):
        load_body_model("smpl", path=str(bad))
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(BodyModelError, match="cannot read"):
        load_body_model("smpl", path=str(bad))


def test_code_in_model_pickle_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'marker'}",))

    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps({"v_template": Boom()}))
    with pytest.raises(UnsafeFileError, match="system"):
        load_body_model("smpl", path=str(tmp_path))
    assert not (tmp_path / "marker").exists()


def test_official_style_file_with_chumpy_sparse_and_uint32(bm, tmp_path, monkeypatch):
    """Like the real SMPL pickles: chumpy shapedirs, sparse J_regressor, uint32 kintree/faces."""
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch, chumpy.ch = Ch, ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    a = bmod.synthetic_model_arrays(0)
    kintree = a["kintree_table"].astype(np.int64)
    kintree[0, 0] = 4294967295
    official = {
        "v_template": a["v_template"],
        "shapedirs": Ch(a["shapedirs"]),
        "posedirs": a["posedirs"],
        "J_regressor": sp.csc_matrix(a["J_regressor"]),
        "weights": a["weights"],
        "kintree_table": kintree.astype(np.uint32),
        "f": a["f"].astype(np.uint32),
        "J": a["J_regressor"] @ a["v_template"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "vert_sym_idxs": np.arange(len(a["v_template"])),
    }
    blob = pickle.dumps(official, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    (tmp_path / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl").write_bytes(blob)
    other = load_body_model("smpl", path=str(tmp_path))
    assert other.sha256 == bm.sha256
    assert other.parents[0] == -1


def test_cli_check_prints_facts_and_one_line_errors(smpl_dir, tmp_path, capsys, bm):
    assert cli_main(["body-model", "check", str(smpl_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{bm.n_vertices} vertices" in out and "24 joints" in out and bm.sha256 in out
    assert cli_main(["body-model", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "SMPL_NEUTRAL.pkl" in err and len(err.strip().splitlines()) == 1
