"""Head ablations: a block's heads all mean-ablated equal the block with its attention output
replaced by its reference mean (by hand); own outputs as donors change nothing; weights stay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import head_ablation as ha
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.hooks import capture, run_with_cache
from tests.conftest import tiny_model


def _images(seed, n):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["cls", "layerscale"])
def test_all_heads_of_a_block_equal_the_mean_attention_output_by_hand(layout, weights_unchanged):
    model = tiny_model(layout)
    check = weights_unchanged(model)
    images, reference = _images(0, 3), _images(1, 5)
    block = 1
    means = ha.reference_means(model, reference, batch_size=2)
    # by hand: the mean of the attention output over the reference, put into the block
    _, ref_cache = run_with_cache(model, reference, [f"blocks.{block}.hook_attn_out"])
    mean_out = ref_cache[f"blocks.{block}.hook_attn_out"].mean(0)               # [N, D]
    _, clean = run_with_cache(model, images, [f"blocks.{block}.hook_resid_pre"])
    x = clean[f"blocks.{block}.hook_resid_pre"] + mean_out
    blk = model.blocks[block]
    expect = x + blk.ls2(blk.mlp(blk.norm2(x)))
    heads = [(block, h) for h in range(blk.attn.num_heads)]
    with ha.ablated(model, heads, means), capture(model, f"blocks.{block}.hook_resid_post") as c:
        model(images)
    assert torch.allclose(c[f"blocks.{block}.hook_resid_post"], expect, atol=1e-5)
    check()


def test_own_outputs_as_donors_change_nothing_and_one_head_changes_something():
    model = tiny_model("cls")
    images = _images(2, 4)
    clean = model(images)
    own = ha.donor_outputs(model, images)
    with ha.ablated(model, [(0, 0), (2, 1)], own):
        assert torch.allclose(model(images), clean, atol=1e-6)
    means = ha.reference_means(model, _images(3, 6))
    with ha.ablated(model, [(0, 0)], means):
        assert not torch.allclose(model(images), clean, atol=1e-4)


def test_effects_are_per_image_and_seeded():
    model = tiny_model("cls")
    images, reference = _images(4, 6), _images(5, 8)
    labels = model(images).argmax(-1)  # the model is right on every image
    means = ha.reference_means(model, reference)
    found = ha.effects(model, images, labels, [(1, 0), (2, 1)], "mean", means)
    assert found["logit_drop"].shape == (6,) and set(np.unique(found["top1_drop"])) <= {0, 1}
    a = ha.effects(model, images, labels, [(1, 0)], "resample", reference=reference, seed=2)
    b = ha.effects(model, images, labels, [(1, 0)], "resample", reference=reference, seed=2)
    assert np.array_equal(a["logit_drop"], b["logit_drop"])
    assert np.allclose(ha.effects(model, images, labels, [], "mean", means)["logit_drop"], 0)


def test_table_and_curve():
    model = tiny_model("cls")
    images, reference = _images(6, 6), _images(7, 6)
    labels = model(images).argmax(-1)
    top = [(2, 0), (2, 1)]
    table = ha.ablation_table(model, images, labels, top, reference, n_random=2)
    assert list(table.heads.unique()) == ["top 2", "random 2 #1", "random 2 #2"]
    assert all(not set(m) & set(top) for m in table.members[2:])
    assert table.iloc[0].logit_drop.n == 6
    curve = ha.block_curve(model, images, labels, reference)
    assert list(curve.block) == [1, 2, 3]


def test_last_hurting_block_reads_the_intervals():
    import pandas as pd
    from vitcls_utils.base.uncertainty import Interval

    hurt, flat = Interval(0.3, 0.1, 0.5, 10), Interval(0.05, -0.1, 0.2, 10)
    curve = pd.DataFrame({"block": [1, 2, 3, 4], "top1_drop": [hurt, hurt, flat, hurt]})
    assert ha.last_hurting_block(curve) == 4
    assert ha.last_hurting_block(curve.iloc[:3]) == 2
    assert ha.last_hurting_block(curve.iloc[2:3]) is None


def test_bad_requests_are_refused():
    model = tiny_model("cls")
    images = _images(8, 2)
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(VitclsError, match="mode"):
        ha.effects(model, images, labels, [(0, 0)], "zero")
    with pytest.raises(VitclsError, match="reference means"):
        ha.effects(model, images, labels, [(0, 0)], "mean")
    with pytest.raises(VitclsError, match="no head"):
        ha.effects(model, images, labels, [(5, 0)], "mean", ha.reference_means(model, images))
    with pytest.raises(VitclsError, match="random heads"):
        ha.random_heads(model, 7)
