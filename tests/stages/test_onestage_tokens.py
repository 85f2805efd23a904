"""Scale-adaptive tokens (SAT-HMR): scale-map targets and the token selection with its ablation modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmrflow.stages.onestage.tokens import BACKGROUND, HIGH_RES, LARGE, scale_map_targets, select_tokens


def test_scale_map_targets_cover_and_nearest_person_wins() -> None:
    # 4x4 grid over 160x160 (40 px patches); a far big box and a near small one overlapping it
    boxes = np.array([[0, 0, 120, 160], [80, 40, 160, 120]], float)
    conf, scale = scale_map_targets(boxes, np.array([5.0, 2.0]), (160, 160), (4, 4))
    expect_conf = np.zeros((4, 4))
    expect_conf[:, :3] = 1
    expect_conf[1:3, 2:] = 1
    np.testing.assert_array_equal(conf, expect_conf)
    far, near = np.hypot(120, 160) / 160, np.hypot(80, 80) / 160
    assert np.isclose(scale[0, 0], min(far, 1.0)) and np.isclose(scale[1, 2], near)  # the nearer person
    assert np.isclose(scale[0, 2], min(far, 1.0)) and scale[0, 3] == 0
    # a box covering under a quarter of a patch does not count
    c2, _ = scale_map_targets(np.array([[0, 0, 15, 15]], float), np.ones(1), (160, 160), (4, 4))
    assert c2.sum() == 0


def _grid(b: int, gh: int, gw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens whose single channel encodes their position (low: 10*r + c, high: 1000 + 10*r + c)."""
    r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    low = (10.0 * r + c)[None, ..., None].repeat(b, 1, 1, 1)
    r2, c2 = torch.meshgrid(torch.arange(2 * gh), torch.arange(2 * gw), indexing="ij")
    high = (1000.0 + 10 * r2 + c2)[None, ..., None].repeat(b, 1, 1, 1)
    return low.float(), high.float()


def test_selection_known_answer() -> None:
    low, high = _grid(1, 4, 4)
    conf = torch.zeros(1, 4, 4)
    scale = torch.zeros(1, 4, 4)
    conf[0, 0, 2] = 1.0
    scale[0, 0, 2] = 0.5  # a large person's token
    conf[0, 3, 3] = 1.0
    scale[0, 3, 3] = 0.05  # a small person's token
    out = select_tokens(low, high, conf, scale, alpha_c=0.5, alpha_s=0.2)
    k = out.kind[0]
    v = out.tokens[0, :, 0]
    # the two all-background 2x2 blocks (top-left, bottom-left) are pooled: means of their values
    pooled = sorted(v[(k == BACKGROUND) & (out.sizes[0] == 4)].tolist())
    assert pooled == [5.5, 25.5]
    # the mixed blocks keep their 3 + 3 background tokens one by one; the large token stays
    assert int(((k == BACKGROUND) & (out.sizes[0] == 1)).sum()) == 6
    assert v[k == LARGE].tolist() == [2.0]
    # the small person's token became its 4 high-resolution tokens
    assert sorted(v[k == HIGH_RES].tolist()) == [1066.0, 1067.0, 1076.0, 1077.0]
    assert int(out.counts[0]) == 2 + 6 + 1 + 4


@pytest.mark.parametrize("mode", ["adaptive", "all_low", "all_high"])
def test_area_and_centre_are_conserved(mode: str) -> None:
    """Sizes add up to the grid's area and the size-weighted centre is the grid's centre,
    whatever was pooled or refined: nothing of the image is lost or counted twice."""
    torch.manual_seed(0)
    low, high = _grid(3, 6, 8)
    conf = (torch.rand(3, 6, 8) > 0.6).float()
    scale = torch.rand(3, 6, 8) * 0.4
    out = select_tokens(low, high, conf, scale, mode=mode)
    for i in range(3):
        s = out.sizes[i][out.valid[i]]
        cen = out.centres[i][out.valid[i]]
        assert float(s.sum()) == pytest.approx(48.0)
        np.testing.assert_allclose((s[:, None] * cen).sum(0) / s.sum(), [2.5, 3.5], atol=1e-5)
    counts = out.counts.tolist()
    if mode == "all_low":
        assert counts == [48] * 3 and (out.kind[out.valid] == LARGE).all()
    if mode == "all_high":
        assert counts == [192] * 3
    if mode == "adaptive":
        assert all(c < 192 for c in counts)


def test_background_discarded_and_padding() -> None:
    low, high = _grid(2, 4, 4)
    conf = torch.zeros(2, 4, 4)
    conf[0, 1, 1] = 1.0  # one large token in image 0, nothing in image 1
    scale = torch.ones(2, 4, 4)
    out = select_tokens(low, high, conf, scale, mode="discard_background")
    assert out.counts.tolist() == [1, 0] and out.tokens.shape == (2, 1, 1)
    assert out.kind[1, 0] == -1 and not out.valid[1, 0] and out.sizes[1, 0] == 0
    with pytest.raises(ValueError, match="even sides"):
        select_tokens(low[:, :3], high[:, :6], conf[:, :3], scale[:, :3])
