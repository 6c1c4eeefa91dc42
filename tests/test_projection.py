"""The projector reproduces the model's own logits; metrics agree with independent definitions."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from vitcls_utils import VitclsError
from vitcls_utils.model.hooks import run_with_cache
from vitcls_utils.model.projection import (ClassProjector, identifiability, rank_of_true_class,
                                           reduce_logits, true_class_logit)


def final_tokens(model, x):
    last = f"blocks.{len(model.blocks) - 1}.hook_resid_post"
    logits, cache = run_with_cache(model, x, names=last)
    return logits, cache[last]


@pytest.mark.parametrize("layout", ["cls", "layerscale", "reg_tokens"])
def test_projection_of_final_cls_equals_logits(layout, weights_unchanged):
    model = tiny_model(layout)
    check = weights_unchanged(model)
    logits, tokens = final_tokens(model, torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(ClassProjector(model)(tokens[:, 0]), logits)
    check()


@pytest.mark.parametrize("layout", ["gap_rpn", "gap_prenorm"])
def test_projection_of_pooled_tokens_equals_logits_for_gap(layout):
    model = tiny_model(layout)
    logits, tokens = final_tokens(model, torch.randn(3, 3, 32, 32))
    assert tokens.shape[1] == 16  # no prefix token
    torch.testing.assert_close(ClassProjector(model)(tokens.mean(1)), logits)


def test_distilled_heads():
    model = tiny_model("distilled")
    logits, tokens = final_tokens(model, torch.randn(3, 3, 32, 32))
    cls_logits = ClassProjector(model, heads="head")(tokens[:, 0])
    dist_logits = ClassProjector(model, heads="head_dist")(tokens[:, 1])
    torch.testing.assert_close((cls_logits + dist_logits) / 2, logits)
    with pytest.raises(VitclsError):
        ClassProjector(model, heads="both")


def test_projector_is_a_frozen_copy():
    model = tiny_model("cls")
    projector = ClassProjector(model)
    with torch.no_grad():
        projector.head.weight.add_(1.0)
    assert not torch.equal(projector.head.weight, model.head.weight)
    assert not any(p.requires_grad for p in projector.parameters())


def test_gradients_flow_to_tokens():
    model = tiny_model("cls")
    tokens = torch.randn(2, 5, 32, requires_grad=True)
    ClassProjector(model)(tokens).sum().backward()
    assert tokens.grad is not None and torch.count_nonzero(tokens.grad) > 0


def test_rank_by_counting_equals_rank_by_sorting():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, 1000, generator=gen)
    labels = torch.randint(0, 1000, (7,), generator=gen)
    order = torch.argsort(logits, dim=-1, descending=True, stable=True)
    by_sorting = (order == labels[:, None, None]).int().argmax(-1)
    assert torch.equal(rank_of_true_class(logits, labels), by_sorting)
    reduced = reduce_logits(logits, labels)
    assert torch.equal(reduced["rank"].long(), by_sorting)
    assert torch.equal(reduced["top1"].long(), order[..., 0])
    assert reduced["rank"].dtype == torch.int16 and reduced["top1"].dtype == torch.int16
    expected = torch.stack([logits[i, :, labels[i]] for i in range(7)])
    assert torch.equal(true_class_logit(logits, labels), expected)


def test_identifiability_values():
    rank = torch.tensor([0, 1, 999])
    torch.testing.assert_close(identifiability(rank, 1000), torch.tensor([1.0, 0.999, 0.001]))
    assert rank_of_true_class(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0])).item() == 0
    assert rank_of_true_class(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([1])).item() == 2


def test_top1_top5_hits_agree_with_sorting():
    from vitcls_utils.model.projection import top1_top5, topk_hits

    logits = torch.randn(40, 7, 30, generator=torch.Generator().manual_seed(3))
    labels = torch.randint(0, 30, (40, 1), generator=torch.Generator().manual_seed(4))
    order = logits.argsort(-1, descending=True)
    for k in (1, 5):
        by_sorting = (order[..., :k] == labels[..., None]).any(-1).float()
        torch.testing.assert_close(topk_hits(logits, labels.expand(40, 7), k), by_sorting)
        torch.testing.assert_close(top1_top5(logits, labels.expand(40, 7))[..., int(k > 1)],
                                   by_sorting)
