"""Known-answer tests of the torch rasteriser."""

from __future__ import annotations

import math

import torch

from hmrflow.stages.render.raster import project, rasterize

K = torch.tensor([[100.0, 0.0, 20.0], [0.0, 100.0, 15.0], [0.0, 0.0, 1.0]])


def square(x0: float, y0: float, x1: float, y1: float, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera-facing square (two triangles) whose corners project to pixel coords (x0,y0)-(x1,y1)."""
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    v = torch.tensor([[(u - 20.0) * z / 100.0, (w - 15.0) * z / 100.0, z] for u, w in pts])
    # counter-clockwise seen from the camera (normal toward -z): order 0, 3, 2 / 0, 2, 1
    f = torch.tensor([[0, 3, 2], [0, 2, 1]])
    return v, f


def test_square_covers_expected_pixels() -> None:
    v, f = square(4.5, 2.5, 10.5, 7.5, z=3.0)  # pixel centres x 5..10, y 3..7
    out = rasterize(v, f, K, 30, 40)
    expected = torch.zeros(30, 40, dtype=torch.bool)
    expected[3:8, 5:11] = True
    assert torch.equal(out.mask[0], expected)
    assert torch.allclose(out.depth[0][expected], torch.full((30,), 3.0))
    assert torch.isinf(out.depth[0][~expected]).all()
    assert set(out.face[0][expected].tolist()) == {0, 1}


def test_tilted_plane_depth_is_perspective_correct() -> None:
    # plane z = 2 + 0.5 x (camera frame); depth at each pixel must lie on the plane exactly
    xs, ys = [-0.5, 0.5], [-0.4, 0.4]
    v = torch.tensor([[x, y, 2 + 0.5 * x] for y in ys for x in xs])
    f = torch.tensor([[0, 1, 3], [0, 3, 2]])
    out = rasterize(v, f, K, 30, 40)
    m = out.mask[0]
    assert m.sum() > 100
    yy, xx = torch.nonzero(m, as_tuple=True)
    rx = (xx.float() - 20) / 100
    z_true = 2 / (1 - 0.5 * rx)  # ray (rx, ry, 1) * z meets z = 2 + 0.5 x
    assert torch.allclose(out.depth[0][m], z_true, rtol=1e-4)


def test_nearer_triangle_wins_and_instances() -> None:
    va, fa = square(0.5, 0.5, 20.5, 20.5, z=4.0)
    vb, fb = square(10.5, 10.5, 30.5, 25.5, z=2.0)
    v = torch.cat([va, vb])
    f = torch.cat([fa, fb + 4])
    inst = torch.tensor([0, 0, 1, 1])
    colors = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    # the same scene twice, the second time listed in the other order: same result
    for order in (torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])):
        out = rasterize(
            v, f[order], K, 30, 40, face_instance=inst[order], face_colors=colors[order], coverage_margin=0.0
        )
        im = out.instance[0]
        assert im[5, 5] == 0 and im[15, 15] == 1 and im[22, 25] == 1 and im[0, 39] == -1
        assert (im == 1).sum() == 20 * 15  # x 11..30, y 11..25, all in front
        assert out.depth[0, 15, 15] == 2.0
        assert out.rgb[0, 15, 15, 2] > 0 and out.rgb[0, 15, 15, 0] == 0
        # coverage alone: A is 20 x 20 pixels, B is 20 x 15
        assert out.coverage.tolist() == [400, 300]
        assert (im == 0).sum() == 400 - 10 * 10


def test_behind_camera_and_near_plane_draw_nothing() -> None:
    v, f = square(4.5, 2.5, 10.5, 7.5, z=3.0)
    out = rasterize(v * torch.tensor([1.0, 1.0, -1.0]), f, K, 30, 40)
    assert not out.mask.any()
    v2 = v.clone()
    v2[0, 2] = 0.01  # one vertex in front of the near plane: its faces are culled
    out = rasterize(v2, f, K, 30, 40, near=0.05)
    assert not out.mask.any()


def test_partly_outside_image_and_coverage_margin() -> None:
    v, f = square(-9.5, 2.5, 9.5, 7.5, z=3.0)  # x centres -9..9 (19 cols), 10 inside
    out = rasterize(v, f, K, 30, 40, coverage_margin=0.5)
    assert out.mask[0].sum() == 10 * 5
    assert out.coverage.tolist() == [19 * 5]


def test_batch_of_images_and_chunking_agree() -> None:
    v, f = square(2.5, 2.5, 30.5, 20.5, z=3.0)
    v2 = torch.cat([v, v + torch.tensor([0.1, 0.0, 0.0])])
    f2 = torch.cat([f, f + 4])
    vimg = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = rasterize(v2, f2, K, 30, 40, vert_image=vimg, n_images=2)
    b = rasterize(v2, f2, K, 30, 40, vert_image=vimg, n_images=2, max_candidates=50)
    assert torch.equal(a.face, b.face) and torch.equal(a.depth, b.depth)
    assert a.mask[0].sum() == a.mask[1].sum() == 28 * 18
    assert a.mask[1, 10, 3:6].tolist() == [False, False, False]  # shifted by 0.1 m * 100/3 = 3.3 px


def test_backface_culling_and_lambert() -> None:
    v, f = square(4.5, 2.5, 10.5, 7.5, z=3.0)
    assert rasterize(v, f, K, 30, 40, cull_backfaces=True).mask.sum() == 30
    assert rasterize(v, f.flip(1), K, 30, 40, cull_backfaces=True).mask.sum() == 0
    # light straight from the camera: intensity = ambient + light * cos(0)
    out = rasterize(
        v,
        f,
        K,
        30,
        40,
        light_dir=torch.tensor([0.0, 0.0, -1.0]),
        light_color=torch.tensor([0.5, 0.5, 0.5]),
        ambient=torch.tensor([0.2, 0.2, 0.2]),
        face_colors=torch.full((2, 3), 0.5),
    )
    assert math.isclose(float(out.rgb[0, 5, 7, 0]), 0.5 * 0.7, rel_tol=1e-5)


def test_project_matches_pinhole() -> None:
    p = project(torch.tensor([[0.3, -0.2, 2.0]]), K)
    assert torch.allclose(p, torch.tensor([[35.0, 5.0]]))


def test_coverage_is_per_instance_and_requires_one_image_each() -> None:
    import pytest

    v, f = square(2.5, 2.5, 12.5, 7.5, z=3.0)  # 10 x 5 pixels
    v2 = torch.cat([v, v])
    f2 = torch.cat([f, f + 4])
    vimg = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    out = rasterize(
        v2, f2, K, 30, 40, vert_image=vimg, n_images=2, face_instance=torch.tensor([0, 0, 1, 1]), coverage_margin=0.25
    )
    assert out.coverage.tolist() == [50, 50]
    # instances >= n_instances (e.g. occluders) are drawn but not counted
    out = rasterize(
        v2,
        f2,
        K,
        30,
        40,
        vert_image=vimg,
        n_images=2,
        face_instance=torch.tensor([0, 0, 1, 1]),
        n_instances=1,
        coverage_margin=0.25,
    )
    assert out.coverage.tolist() == [50] and out.instance[1].max() == 1
    with pytest.raises(ValueError):
        rasterize(v2, f2, K, 30, 40, vert_image=vimg, n_images=2, coverage_margin=0.25)
