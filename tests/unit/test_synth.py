"""Synthetic world: ground-truth consistency of clips and crops, determinism, bench sets."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch

from hmrflow.jobs.synth.bench_sets import BENCH_SETS, load_bench_set
from hmrflow.jobs.synth.camera import look_at
from hmrflow.jobs.synth.clip import load_body_assets, render_clip, render_scene
from hmrflow.jobs.synth.scene import Occluder, SceneSpec, sample_scene
from hmrflow.jobs.synth.world import change_frame
from hmrflow.pipeline.errors import ConfigError
from hmrflow.priors.rotations import axis_angle_to_matrix
from hmrflow.stages.render.raster import project

TINY = dict(seconds=10 / 30, fps=30.0, width=160, height=120)


@pytest.fixture(scope="module")
def body():
    return load_body_assets()


@pytest.fixture(scope="module")
def clip(body, tmp_path_factory):
    spec = SceneSpec(name="tiny", seed=5, people=2, camera="pan", walkers=0.5, **TINY)
    out = tmp_path_factory.mktemp("set")
    d = render_clip(spec, out, body=body, progress=False)
    return spec, d, dict(np.load(d / "gt.npz"))


def test_clip_files_and_shapes(clip) -> None:
    spec, d, g = clip
    assert (d / "tiny.mp4").is_file() and (d / "scene.json").is_file()
    n, p = 10, 2
    assert int(g["n_frames"]) == n and str(g["video_id"]) == "tiny"
    assert g["poses"].shape == (n, p, 72) and g["joints2d"].shape == (n, p, 24, 2) and g["boxes"].shape == (n, p, 4)
    assert g["cam_R"].shape == (n, 3, 3) and g["K"].shape == (3, 3) and str(g["body_model"]) == "synthetic"
    with av.open(str(d / "tiny.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == n and frames[0].shape == (120, 160, 3)


def test_joints2d_are_projected_joints3d(clip) -> None:
    _, _, g = clip
    j2 = project(torch.from_numpy(g["joints3d"]).double(), torch.from_numpy(g["K"]))
    assert np.abs(j2.numpy() - g["joints2d"]).max() < 1e-3


def test_camera_frame_parameters_reproduce_joints(clip, body) -> None:
    _, _, g = clip
    n, p = g["poses"].shape[:2]
    rot = axis_angle_to_matrix(torch.from_numpy(g["poses"]).reshape(n * p, 24, 3))
    betas = torch.from_numpy(g["betas"]).repeat(n, 1)
    with torch.no_grad():
        out = body.model(rot, betas, torch.from_numpy(g["transl"]).reshape(n * p, 3))
    assert np.abs(out.joints[:, :24].reshape(n, p, 24, 3).numpy() - g["joints3d"]).max() < 1e-4


def test_world_parameters_map_to_camera(clip, body) -> None:
    _, _, g = clip
    n, p = g["poses"].shape[:2]
    rot = axis_angle_to_matrix(torch.from_numpy(g["world_poses"]).reshape(n * p, 24, 3))
    with torch.no_grad():
        out = body.model(
            rot, torch.from_numpy(g["betas"]).repeat(n, 1), torch.from_numpy(g["world_transl"]).reshape(n * p, 3)
        )
    jw = out.joints[:, :24].reshape(n, p, 24, 3).double().numpy()
    jc = np.einsum("fij,fpkj->fpki", g["cam_R"], jw) + g["cam_t"][:, None, None]
    assert np.abs(jc - g["joints3d"]).max() < 1e-4
    # change_frame applied to world params gives the stored camera params
    j0 = body.model.rest_joints(torch.from_numpy(g["betas"]))[:, 0]
    root, tr = change_frame(
        torch.from_numpy(g["world_poses"][..., :3]),
        torch.from_numpy(g["world_transl"]),
        j0[None],
        torch.from_numpy(g["cam_R"]).float()[:, None],
        torch.from_numpy(g["cam_t"]).float()[:, None],
    )
    assert np.abs(tr.numpy() - g["transl"]).max() < 1e-5
    # the people stand on the ground: lowest vertex of frame 0 at y = 0
    assert abs(float(out.vertices[:p, :, 1].min())) < 1e-4


def test_visibility_boxes_consistent(clip) -> None:
    _, _, g = clip
    vis, boxes = g["visible_frac"], g["boxes"]
    assert ((vis >= 0) & (vis <= 1.0 + 1e-6)).all()
    assert np.isnan(boxes[vis == 0]).all()
    assert np.isfinite(boxes[vis > 0]).all()
    assert (vis[~g["in_frame"]] == 0).all()
    assert vis.max() > 0.3  # somebody is visible


def test_same_seed_same_gt_bytes(clip, body, tmp_path) -> None:
    spec, d, _ = clip
    d2 = render_clip(spec, tmp_path, body=body, progress=False)
    assert (d / "gt.npz").read_bytes() == (d2 / "gt.npz").read_bytes()
    other = render_clip(dataclasses.replace(spec, seed=6), tmp_path / "o", body=body, progress=False)
    assert (other / "gt.npz").read_bytes() != (d / "gt.npz").read_bytes()


def test_person_behind_pillar_is_invisible(body, tmp_path) -> None:
    spec = SceneSpec(name="hidden", seed=1, people=1, walkers=0.0, camera="static", **TINY)
    scene = sample_scene(spec)
    person = scene.people[0]
    # camera at the origin looking along +z; person standing 5 m ahead; a wide pillar at 2 m
    R, t = look_at(np.array([0.0, 1.2, 0.0]), np.array([0.0, 1.0, 5.0]))
    n = spec.n_frames
    trans = person.trans.copy()
    trans[:, 0] += -trans[0, 0]
    trans[:, 2] += 5.0 - trans[0, 2]
    scene = dataclasses.replace(
        scene,
        cam_R=np.repeat(R[None], n, 0),
        cam_t=np.repeat(t[None], n, 0),
        people=[dataclasses.replace(person, trans=trans)],
        occluders=[Occluder((0.0, 2.0), (3.0, 4.0, 0.3), 0.0, (0.5, 0.5, 0.5))],
    )
    g = np.load(render_scene(scene, tmp_path, body, progress=False) / "gt.npz")
    assert g["in_frame"].all()
    assert (g["visible_frac"] < 1e-3).all()
    assert np.isnan(g["boxes"]).all()
    # without the pillar the same person is fully visible
    g2 = np.load(
        render_scene(dataclasses.replace(scene, occluders=[]), tmp_path / "b", body, progress=False) / "gt.npz"
    )
    assert (g2["visible_frac"] > 0.99).all()
    assert np.isfinite(g2["boxes"]).all()


def test_crops_ground_truth(body) -> None:
    from hmrflow.jobs.synth.crops import render_crops

    d = render_crops(np.random.default_rng(0), 12, size=(64, 48), body=body, batch=8)
    assert d["images"].shape == (12, 64, 48, 3) and d["images"].dtype == np.uint8
    assert d["masks"].shape == (12, 64, 48)
    j2 = project(torch.from_numpy(d["joints3d"]), torch.from_numpy(d["K"])[:, None])
    assert np.abs(j2.numpy() - d["joints2d"]).max() < 1e-2
    with torch.no_grad():
        out = body.model(torch.from_numpy(d["rotmats"]), torch.from_numpy(d["betas"]), torch.from_numpy(d["transl"]))
    assert np.abs(out.joints[:, :24].numpy() - d["joints3d"]).max() < 1e-4
    # full-image projection mapped through the crop box = crop projection
    jf = project(torch.from_numpy(d["joints3d"]).double(), torch.from_numpy(d["K_full"]).double()[:, None]).numpy()
    box = d["box"].astype(np.float64)
    s = 64 / (box[:, 3] - box[:, 1])
    jc = (jf - box[:, None, :2] + 0.5) * s[:, None, None] - 0.5
    assert np.abs(jc - d["joints2d"]).max() < 2e-2
    assert ((d["visible_frac"] >= 0) & (d["visible_frac"] <= 1 + 1e-6)).all()
    assert (d["masks"].reshape(12, -1).sum(1) > 0).sum() >= 8


def test_bench_sets_load() -> None:
    for name in BENCH_SETS:
        specs = load_bench_set(name, n_clips=3)
        assert len(specs) == 3 and specs[0].name == f"{name}_000" and specs[1].seed == specs[0].seed + 1
    assert {s.people for s in load_bench_set("crowded")} <= {4, 5, 6}
    assert max(s.height_frac[1] for s in load_bench_set("far")) <= 0.2


def test_bad_spec_rejected(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspec: {peple: 2}\n")
    with pytest.raises(ConfigError):
        load_bench_set(str(bad))
    with pytest.raises(ConfigError):
        SceneSpec(camera="orbit")


# ------------------------------------------------ crossings, groups, look-alikes
def _xz(person) -> np.ndarray:
    """(F, 2) ground position (x, z) of a person's root."""
    return person.trans[:, [0, 2]].astype(np.float64)


def _unit(heading_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Walking direction u (x, z) of a heading about +y, and its perpendicular v pointing away
    from the camera (+z), the direction in which the sampler lines up a group's members."""
    h = np.radians(heading_deg)
    u = np.array([np.sin(h), np.cos(h)])
    v = np.array([-u[1], u[0]])
    return u, (v if v[1] >= 0 else -v)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_members_walk_side_by_side_at_the_stated_gap(seed: int) -> None:
    spec = SceneSpec(seed=seed, people=3, groups=1, group_size=(3, 3), seconds=3.0, walkers=1.0)
    scene = sample_scene(spec)
    (group,) = scene.extra["groups"]
    members = [scene.people[i] for i in group["people"]]
    assert [m.role for m in members] == ["group"] * 3 and len(group["gaps_m"]) == 2
    u, v = _unit(group["heading_deg"])
    for a, b, gap in zip(members, members[1:], group["gaps_m"]):
        assert 0.5 <= gap <= 0.8
        d = _xz(b) - _xz(a)  # (F, 2) from one neighbour to the next, every frame
        # side by side: the whole distance is across the walking direction (gait sway aside)
        assert np.abs(d @ v - gap).max() < 0.1
        assert np.abs(d @ u).max() < 0.1
    # same speed and direction: every member advances the same along u
    adv = [(_xz(m)[-1] - _xz(m)[0]) @ u for m in members]
    assert min(adv) > 0 and max(adv) - min(adv) < 0.1
    assert adv[0] == pytest.approx(group["speed_m_s"] * (spec.n_frames - 1) / spec.fps, abs=0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossing_walkers_pass_each_other_at_the_stated_gap(seed: int) -> None:
    spec = SceneSpec(seed=seed, people=2, cross_pairs=1, seconds=4.0, walkers=1.0)
    scene = sample_scene(spec)
    (cross,) = scene.extra["crossings"]
    a, b = (scene.people[i] for i in cross["people"])
    u, v = _unit(cross["heading_deg"])
    assert 0.3 <= cross["gap_m"] <= 0.8
    assert (_xz(a)[-1] - _xz(a)[0]) @ u > 1.0 and (_xz(b)[-1] - _xz(b)[0]) @ u < -1.0  # opposite ways
    d = _xz(b) - _xz(a)
    assert np.abs(np.abs(d @ v) - cross["gap_m"]).max() < 0.1  # parallel lines gap apart
    along = d @ u
    assert along[0] > 0 > along[-1]  # b starts ahead and ends behind: they pass
    meet = int(np.argmin(np.abs(along)))
    assert meet / spec.fps == pytest.approx(cross["meet_s"], abs=0.2)


def test_twins_share_clothes_and_shape_but_other_sets_do_not(body) -> None:
    def heights(scene) -> np.ndarray:
        betas = torch.from_numpy(np.stack([p.betas for p in scene.people]))
        with torch.no_grad():
            v = body.model(torch.eye(3).expand(len(betas), 24, 3, 3), betas, torch.zeros(len(betas), 3)).vertices
        return (v[..., 1].amax(1) - v[..., 1].amin(1)).numpy()

    for spec in load_bench_set("twins"):
        scene = sample_scene(spec)
        pal = np.stack([p.palette for p in scene.people])  # (P, parts, 3)
        assert len(pal) >= 2
        assert np.abs(pal - pal[0]).max() < 0.15, spec.name
        assert np.ptp(heights(scene)) < 0.04, spec.name
    crowd = sample_scene(load_bench_set("crowded", n_clips=1)[0])
    pal = np.stack([p.palette for p in crowd.people])
    assert np.abs(pal - pal[0]).max() > 0.3


def test_new_sets_contain_crossings_and_groups() -> None:
    for name in ("crossings", "twins"):
        scenes = [sample_scene(s) for s in load_bench_set(name)]
        assert any(s.extra.get("crossings") for s in scenes), name
        assert any(s.extra.get("groups") for s in scenes), name
        assert all(s.extra for s in scenes), name


def test_twins_clip_same_seed_same_gt_bytes(body, tmp_path) -> None:
    (spec,) = load_bench_set("twins", n_clips=1, seed=11, **TINY)
    d1 = render_clip(spec, tmp_path / "a", body=body, progress=False)
    d2 = render_clip(spec, tmp_path / "b", body=body, progress=False)
    assert (d1 / "gt.npz").read_bytes() == (d2 / "gt.npz").read_bytes()
    assert "layout" in (d1 / "scene.json").read_text()
    (other,) = load_bench_set("twins", n_clips=1, seed=12, **TINY)
    d3 = render_clip(other, tmp_path / "c", body=body, progress=False)
    assert (d3 / "gt.npz").read_bytes() != (d1 / "gt.npz").read_bytes()
