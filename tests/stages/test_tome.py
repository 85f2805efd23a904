"""Mask-ToMe: bipartite matching with protected tokens, proportional attention, exact removal."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmrflow.stages.mesh.accel.flops import model_flops, tome_token_counts
from hmrflow.stages.mesh.accel.merge import bipartite_soft_matching, merge_fns
from hmrflow.stages.mesh.accel.tome import (
    MaskToMeConfig,
    apply_mask_tome,
    protect_mask,
    r_schedule,
    tome_features,
)
from hmrflow.stages.mesh.model import build_estimator

IMG = (96, 64)  # 6 x 4 = 24 tokens: fast


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_estimator("tiny", IMG).eval()


@pytest.fixture(scope="module")
def crops():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, *IMG, generator=g)


def test_weighted_merge_known_answer():
    # tokens 0,2 in A; 1,3 in B.  Token 2 is (nearly) parallel to token 1 -> merged into it.
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.05, 1.0], [1.0, -1.0]]])
    x = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]])
    sizes = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    m = bipartite_soft_matching(metric, 1)
    assert m.r == 1 and m.src_idx.tolist() == [[1]] and m.dst_idx.tolist() == [[0]]
    merged, new_sizes = m.merge_weighted(x, sizes[..., None])
    # order: unmerged A (token 0), then B (token 1 absorbing token 2, token 3)
    assert merged[0, :, 0].tolist() == pytest.approx([1.0, (3 * 2.0 + 4.0) / 4, 8.0])
    assert new_sizes[0, :, 0].tolist() == [1.0, 4.0, 1.0]
    assert m.new_positions().tolist() == [[0, 1, 1, 2]]
    merge, unmerge = merge_fns(metric, 1, sizes=sizes)
    assert torch.allclose(merge(x), merged)
    assert unmerge(merged)[0, :, 0].tolist() == pytest.approx([1.0, 2.5, 2.5, 8.0])


@pytest.mark.parametrize("n", [11, 48, 64, 65, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weighted_merge_matches_a_direct_sum_on_both_paths(n, dtype):
    """The matmul path (N <= 64) and the index_add path (N > 64) against a per-token loop."""
    g = torch.Generator().manual_seed(n)
    b, c = 3, 5
    x = torch.randn(b, n, c, generator=g).to(dtype)
    sizes = torch.randint(1, 5, (b, n, 1), generator=g).float()
    protect = torch.rand(b, n, generator=g) < 0.3
    m = bipartite_soft_matching(torch.randn(b, n, 4, generator=g), n // 3, protect)
    merged, total = m.merge_weighted(x, sizes)
    pos = m.new_positions()
    want_x = torch.zeros(b, m.n_out, c, dtype=torch.float64)
    want_s = torch.zeros(b, m.n_out, 1, dtype=torch.float64)
    for i in range(b):
        for t in range(n):
            want_x[i, pos[i, t]] += x[i, t].double() * sizes[i, t].double()
            want_s[i, pos[i, t]] += sizes[i, t].double()
    assert merged.dtype == dtype and total.dtype == torch.float32
    assert torch.equal(total.double(), want_s)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(merged.double(), want_x / want_s, atol=tol, rtol=tol)


def test_r_zero_is_identity(model, crops):
    x = torch.randn(2, 10, 4)
    m = bipartite_soft_matching(x, 0)
    assert m.r == 0 and m.merge(x) is x and m.unmerge(x) is x
    with torch.inference_mode():
        base = model(crops)
        with apply_mask_tome(model, MaskToMeConfig(r=0)):
            out = model(crops, protect=torch.zeros(3, 6, 4))
    assert torch.equal(out.pose6d, base.pose6d) and torch.equal(out.betas, base.betas)


def test_sizes_sum_to_token_count_and_source_map(model, crops):
    with torch.inference_mode():
        mt = tome_features(model.backbone, crops, [3, 3, 2, 2, 1, 1])
    n = 24
    assert mt.tokens.shape[1] == n - 12
    assert torch.equal(mt.sizes.sum(-1), torch.full((3,), float(n)))
    counts = torch.stack([torch.bincount(s, minlength=mt.tokens.shape[1]) for s in mt.source]).float()
    assert torch.equal(counts, mt.sizes)  # a token's size = the patches mapped to it
    assert [b for _, b in mt.block_tokens] == [21, 18, 16, 14, 13, 12]


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    n=st.integers(2, 40),
    r=st.integers(0, 25),
    seed=st.integers(0, 10_000),
    p_person=st.floats(0.0, 1.0),
    full_person=st.booleans(),
)
def test_protected_tokens_never_merge(b, n, r, seed, p_person, full_person):
    g = torch.Generator().manual_seed(seed)
    metric = torch.randn(b, n, 5, generator=g)
    protect = torch.rand(b, n, generator=g) < p_person
    if full_person:
        protect[0] = True
    m = bipartite_soft_matching(metric, r, protect)
    pos = m.new_positions()
    assert pos.shape == (b, n) and int(pos.max()) < n - m.r
    for i in range(b):
        counts = torch.bincount(pos[i], minlength=n - m.r)
        # a protected token is alone in its output slot: not merged, nothing merged into it
        assert bool((counts[pos[i][protect[i]]] == 1).all())
        assert int(counts.sum()) == n
    free_a = (~protect[:, ::2]).sum(-1)
    has_b = (~protect[:, 1::2]).any(-1)
    avail = torch.where(has_b, free_a, torch.zeros_like(free_a))
    assert m.r == min(r, n // 2, int(avail.min()))
    if full_person:
        assert m.r == 0
    merged_mask = m.merge_mask(protect)
    assert int(merged_mask.sum()) == int(protect.sum())
    assert torch.equal(m.keep_protected(protect), merged_mask)  # the cheap gather form agrees


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), p_person=st.floats(0.0, 0.9), r=st.integers(1, 8))
def test_protected_tokens_survive_the_whole_backbone(model, seed, p_person, r):
    g = torch.Generator().manual_seed(seed)
    crops = torch.randn(2, 3, *IMG, generator=g)
    cover = (torch.rand(2, 6, 4, generator=g) < p_person).float()
    protect = protect_mask(cover)
    with torch.inference_mode():
        mt = tome_features(model.backbone, crops, [r] * 6, protect)
    # every protected patch ends in a token of size 1 (it absorbed nothing, it went nowhere)
    final_size = mt.sizes.gather(1, mt.source)
    assert bool((final_size[protect] == 1).all())
    assert torch.equal(mt.sizes.sum(-1), torch.full((2,), 24.0))


def test_removal_restores_exact_outputs(model, crops):
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    cover = torch.zeros(3, 6, 4)
    cover[:, 1:5, 1:3] = 0.7
    with torch.inference_mode():
        base = model(crops)
        handle = apply_mask_tome(model, MaskToMeConfig(r=4))
        merged = model(crops, protect=cover)
        assert not torch.equal(merged.pose6d, base.pose6d)
        with pytest.raises(RuntimeError):
            apply_mask_tome(model, MaskToMeConfig(r=1))
        handle.remove()
        handle.remove()  # idempotent
        after = model(crops)
    assert torch.equal(after.pose6d, base.pose6d) and torch.equal(after.pred_cam, base.pred_cam)
    assert "forward" not in model.__dict__
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())


def test_head_on_merged_tokens_equals_head_on_unmerged(model, crops):
    with torch.inference_mode():
        with apply_mask_tome(model, MaskToMeConfig(r=3, head_input="merged")):
            a = model(crops)
        with apply_mask_tome(model, MaskToMeConfig(r=3, head_input="unmerged")):
            b = model(crops)
    assert torch.allclose(a.pose6d, b.pose6d, atol=1e-5) and torch.allclose(a.betas, b.betas, atol=1e-5)


def test_schedules():
    assert r_schedule(MaskToMeConfig(r=5), 4) == [5, 5, 5, 5]
    dec = r_schedule(MaskToMeConfig(r=6, schedule="decreasing"), 6)
    assert sum(dec) == 36 and dec == sorted(dec, reverse=True) and dec[-1] == 0
    assert r_schedule(MaskToMeConfig(r=(4, 2), schedule="list"), 4) == [4, 2, 0, 0]
    with pytest.raises(ValueError):
        r_schedule(MaskToMeConfig(r=(1,) * 7, schedule="list"), 6)
    with pytest.raises(ValueError):
        MaskToMeConfig(r=(1, 2))


def test_protect_mask_threshold_and_dilate():
    cov = torch.zeros(1, 5, 5)
    cov[0, 2, 2] = 0.3
    assert protect_mask(cov).sum() == 1
    assert protect_mask(cov, threshold=0.5).sum() == 0
    assert protect_mask(cov, dilate=1).reshape(5, 5)[1:4, 1:4].all() and protect_mask(cov, dilate=1).sum() == 9


def test_flops_follow_token_counts(model, crops):
    with torch.inference_mode():
        mt = tome_features(model.backbone, crops, [2] * 6)
    full, merged = model_flops(model), model_flops(model, mt.block_tokens)
    assert merged.blocks < full.blocks and merged.total < full.total
    assert tome_token_counts(24, [2] * 6) == list(mt.block_tokens)
    assert tome_token_counts(24, [8] * 3, n_protected=20) == [(24, 22), (22, 21), (21, 21)]


def test_reentrant_across_threads(model, crops):
    """Concurrent calls with different masks give the same results as sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    covers = [
        torch.zeros(3, 6, 4),
        torch.ones(3, 6, 4),
        (torch.rand(3, 6, 4, generator=torch.Generator().manual_seed(5)) > 0.5).float(),
    ]
    with apply_mask_tome(model, MaskToMeConfig(r=3)):
        with torch.inference_mode():
            ref = [model(crops, protect=c).pose6d for c in covers]

        def call(i: int) -> torch.Tensor:
            with torch.inference_mode():
                return model(crops, protect=covers[i % 3]).pose6d

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(call, range(12)))
    assert all(torch.equal(g, ref[i % 3]) for i, g in enumerate(got))
    assert not torch.equal(ref[0], ref[1])  # the masks matter (all-person = no merge at all)


@pytest.mark.slow
def test_torch_compile_matches_eager(model, crops):
    cover = torch.zeros(3, 6, 4)
    cover[:, 2:5, 1:3] = 1.0
    with apply_mask_tome(model, MaskToMeConfig(r=3)), torch.inference_mode():
        ref = model(crops, protect=cover)
        out = torch.compile(model, backend="aot_eager")(crops, protect=cover)
    assert torch.allclose(out.pose6d, ref.pose6d, atol=1e-6)


def test_group_size_sub_batches_match_separate_calls(model):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, *IMG, generator=g)
    cover = torch.zeros(4, 6, 4)
    cover[1] = 1.0  # one crop all person: in one batch it would stop all merging
    cover[3, :3] = 1.0
    with torch.inference_mode():
        with apply_mask_tome(model, MaskToMeConfig(r=3, group_size=2)):
            grouped = model(x, protect=cover)
        with apply_mask_tome(model, MaskToMeConfig(r=3)):
            # sorted by person tokens: (0, 2) then (3, 1)
            a = model(x[[0, 2]], protect=cover[[0, 2]])
            b = model(x[[3, 1]], protect=cover[[3, 1]])
            whole = model(x, protect=cover)
    assert torch.allclose(grouped.pose6d[[0, 2]], a.pose6d, atol=1e-6)
    assert torch.allclose(grouped.pose6d[[3, 1]], b.pose6d, atol=1e-6)
    assert not torch.allclose(grouped.pose6d[0], whole.pose6d[0], atol=1e-6)
