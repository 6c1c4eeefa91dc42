"""The class-logit decomposition: parts sum to the model's logit; per-head and per-position
parts agree with the hooked head outputs; unsupported layouts refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import logit_decomposition as ld
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.hooks import run_with_cache
from vitcls_utils.model.projection import ClassProjector
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def toy_model_and_images():
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.loading import load_variant
    from vitcls_utils.stores.stimulus_loader import labelled_batches

    model = load_variant("toy")
    images, labels = next(labelled_batches(model, ToyDataset(n_per_class=1), 6, "toy", False))
    return model, images, labels


def _images(seed=0, n=4, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["cls", "layerscale", "reg_tokens", "gap_prenorm"])
def test_parts_sum_to_the_logit(layout):
    model = tiny_model(layout)
    images = _images()
    labels = torch.tensor([0, 3, 7, 9])
    out = ld.decompose(model, images, labels)
    logits = model(images)
    assert np.allclose(out.logit, logits[torch.arange(4), labels].numpy(), atol=1e-6)
    assert np.abs(out.residual).max() < 1e-4
    assert np.allclose(out.total(), out.logit, atol=1e-4)
    assert out.heads.shape == (4, 3, 2, 17 + (2 if layout == "reg_tokens" else 0)
                               - (1 if layout == "gap_prenorm" else 0))


def test_head_logits_match_the_hooked_head_outputs():
    """Second computation: a head's output recomputed from hook_z, put through the model's own
    norm with its std frozen, minus the norm of nothing, gives the head's logit."""
    model = tiny_model("layerscale")
    images = _images(1)
    out = ld.decompose(model, images, all_classes=True)
    _, cache = run_with_cache(model, images, ["blocks.2.attn.hook_z", "blocks.2.hook_resid_post"])
    final = cache["blocks.2.hook_resid_post"][:, 0]
    std = torch.sqrt(final.var(-1, unbiased=False) + model.norm.eps)
    z = cache["blocks.2.attn.hook_z"][:, 0, 1]                              # head 1 at [CLS]
    blk = model.blocks[2]
    w = blk.attn.proj.weight[:, 32 // 2:]
    part = (z @ w.T) * blk.ls1.gamma
    centred = part - part.mean(-1, keepdim=True)
    pred = torch.tensor(out.classes)
    head = (centred / std[:, None] * model.norm.weight) @ model.head.weight.T
    expect = head[torch.arange(4), pred].double().numpy()
    assert np.allclose(out.head_logits[:, 2, 1][np.arange(4), out.classes], expect, atol=1e-5)
    # positions add up to the head (the per-position split is a second computation of it)
    assert np.allclose(out.heads[:, 2, 1].sum(-1), expect, atol=1e-5)


def test_sum_over_all_classes_matches_every_logit():
    model = tiny_model("cls")
    images = _images(2, n=2)
    logits = model(images)
    for c in range(3):
        out = ld.decompose(model, images, torch.full((2,), c))
        assert np.allclose(out.total(), logits[:, c].double().numpy(), atol=1e-4)


def test_toy_model_sums_within_1e4(toy_model_and_images):
    model, images, labels = toy_model_and_images
    out = ld.decompose(model, images, labels)
    assert np.abs(out.residual).max() < 1e-4
    writers = ld.block_writers(out)
    assert len(writers) == len(model.blocks)
    top = ld.top_heads(out, 3)
    assert out.head_logits is None
    assert top[0][2] >= top[1][2] >= top[2][2]


@pytest.mark.parametrize("layout, extra", [("gap_rpn", {}), ("distilled", {}),
                                           ("cls", {"pre_norm": True})])
def test_unsupported_layouts_are_refused(layout, extra):
    with pytest.raises(VitclsError, match="decompos|distilled"):
        ld.decompose(tiny_model(layout, **extra), _images(n=1))


def test_dataset_decomposition_concatenates_batches(tiny_toy_variant):
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.loading import load_variant

    model = load_variant(tiny_toy_variant.key)
    dataset = ToyDataset(n_per_class=1)
    whole = ld.decompose_dataset(model, dataset, batch_size=5, limit=12)
    images, labels = ld.images_of(model, dataset, limit=12)
    assert len(whole.logit) == 12 and labels[0] == 0 and labels[-1] == 23
    one = ld.decompose(model, images, labels)
    assert np.allclose(whole.heads, one.heads, atol=1e-6)
    assert np.abs(whole.residual).max() < 1e-4
