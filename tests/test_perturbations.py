"""Perturbations: attention edits do what they claim on the model's own outputs, and token
removal equals a one-image-at-a-time forward on the shortened sequence."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from vitcls_utils import VitclsError
from vitcls_utils.datasets.kinds import ImageFolderDataset, ToyDataset
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.model.hooks import capture
from vitcls_utils.model.perturbations import (AttentionPerturbation, TokenRemoval, edit_pattern,
                                              group_by_length, keeping_tokens, parse_perturbation,
                                              perturbation_name)
from vitcls_utils.model.projection import ClassProjector
from vitcls_utils.datasets.toy import TOY_PREPROCESS
from vitcls_utils.model.loading import load_variant
from vitcls_utils.model.layout import TokenLayout


def forward_with(model, images, perturbation):
    from vitcls_utils.model.hooks import hooks

    with torch.no_grad(), hooks(model, perturbation.fwd_hooks(model)):
        with capture(model, f"blocks.{len(model.blocks) - 1}.hook_resid_post") as cache:
            logits = model(images)
    return logits, next(iter(cache.values()))


def random_pattern(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).softmax(-1)


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["cls", "reg_tokens", "gap_rpn"])
def test_self_only_makes_each_image_token_a_function_of_its_own_patch(layout):
    """Change one patch: under self-only, every other image token's final state is unchanged
    (and without the perturbation it does change, so the test can fail)."""
    model = tiny_model(layout)
    prefix = TokenLayout.of(model).num_prefix
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changed = images.clone()
    changed[:, :, 8:16, 16:24] += 3.0  # patch (row 1, col 2) of the 4x4 grid: image token 6
    touched = prefix + 6
    others = [t for t in range(prefix, prefix + 16) if t != touched]
    perturbation = AttentionPerturbation("self_only")
    _, before = forward_with(model, images, perturbation)
    _, after = forward_with(model, changed, perturbation)
    assert torch.allclose(before[:, others], after[:, others], atol=1e-6)
    assert not torch.allclose(before[:, touched], after[:, touched], atol=1e-3)
    with torch.no_grad(), capture(model, "blocks.2.hook_resid_post") as clean:
        model(images)
    with torch.no_grad(), capture(model, "blocks.2.hook_resid_post") as clean_changed:
        model(changed)
    key = "blocks.2.hook_resid_post"
    assert not torch.allclose(clean[key][:, others], clean_changed[key][:, others], atol=1e-3)


def test_edit_pattern_rows():
    pattern = random_pattern((2, 3, 6, 6))
    one_hot = edit_pattern(pattern, "self_only", num_prefix=1)
    assert torch.equal(one_hot[..., 0, :], pattern[..., 0, :])  # [CLS] row untouched
    assert torch.equal(one_hot[..., 1:, :], torch.eye(6)[1:].expand(2, 3, 5, 6))

    no_cls = edit_pattern(pattern, "no_cls", num_prefix=1)
    assert torch.equal(no_cls[..., 0, :], pattern[..., 0, :])
    assert torch.all(no_cls[..., 1:, 0] == 0)
    assert torch.equal(no_cls[..., 1:, 1:], pattern[..., 1:, 1:])  # [CLS]-free entries kept
    sums = no_cls[..., 1:, :].sum(-1)  # not renormalized: 1 - A[i, 0]
    assert torch.allclose(sums, 1 - pattern[..., 1:, 0])

    renorm = edit_pattern(pattern, "no_cls", num_prefix=1, renormalize=True)
    assert torch.allclose(renorm.sum(-1), torch.ones(2, 3, 6))
    assert torch.allclose(renorm[..., 1:, 1:], pattern[..., 1:, 1:] / sums[..., None])

    prefix_kept = edit_pattern(pattern, "self_only", num_prefix=2, keep_prefix=True)
    assert torch.equal(prefix_kept[..., :2, :], pattern[..., :2, :])
    for i in range(2, 6):
        others = [j for j in range(2, 6) if j != i]
        assert torch.all(prefix_kept[..., i, others] == 0)
        assert torch.equal(prefix_kept[..., i, [0, 1, i]], pattern[..., i, [0, 1, i]])


def test_no_cls_pattern_seen_by_the_model_and_no_cls_needs_cls():
    model = tiny_model("cls")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture(model, "blocks.0.attn.hook_pattern") as clean:
        model(images)
    perturbation = AttentionPerturbation("no_cls", blocks=[0])
    from vitcls_utils.model.hooks import hooks

    # the reading hook comes after the editing one, so it sees the edited pattern
    with torch.no_grad(), hooks(model, perturbation.fwd_hooks(model)), \
            capture(model, "blocks.0.attn.hook_pattern") as edited:
        model(images)
    expected = edit_pattern(clean["blocks.0.attn.hook_pattern"], "no_cls", 1)
    assert torch.equal(edited["blocks.0.attn.hook_pattern"], expected)
    with pytest.raises(VitclsError, match="needs a \\[CLS\\]"):
        AttentionPerturbation("no_cls").fwd_hooks(tiny_model("gap_prenorm"))
    with pytest.raises(VitclsError, match="out of range"):
        AttentionPerturbation("self_only", blocks=[7]).fwd_hooks(model)
    with pytest.raises(VitclsError, match="mode must be"):
        AttentionPerturbation("cls_only")
    assert perturbation_name(AttentionPerturbation("no_cls", blocks=[3, 1],
                                                   renormalize=True).config()) \
        == "no_cls+renorm@1,3"


# ----------------------------------------------------------------------------------------------
# Token removal
# ----------------------------------------------------------------------------------------------
def test_group_by_length():
    lengths = [3, 5, 3, 3, 5, 1, 3]
    batches = group_by_length(lengths, batch_size=2)
    assert all(len(b) <= 2 and len({lengths[i] for i in b}) == 1 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert [b.tolist() for b in batches] == [[5], [0, 2], [3, 6], [1, 4]]


@pytest.mark.parametrize("layout", ["cls", "reg_tokens", "gap_prenorm", "distilled"])
def test_keeping_every_token_is_the_normal_forward(layout):
    model = tiny_model(layout)
    images = torch.randn(3, 3, 32, 32)
    n = TokenLayout.of(model).n_tokens
    with torch.no_grad():
        clean = model(images)
        with keeping_tokens(model, torch.arange(n).expand(3, n)):
            kept = model(images)
    assert torch.allclose(clean, kept, atol=1e-6)  # a gathered copy may sum in another order


def one_image_reference(model, image, kept):
    """Second computation, batch size 1, no hooks: the blocks run on x[:, kept] by hand."""
    with torch.no_grad():
        x = model._pos_embed(model.patch_embed(image[None]))[:, kept]
        for block in model.blocks:
            x = block(model.norm_pre(x) if block is model.blocks[0] else x)
        logits = model.forward_head(model.norm(x))
        token_logits = ClassProjector(model)(x)[0]
    return logits[0], token_logits


@pytest.mark.parametrize("keep", ["class", "context"])
def test_removal_store_matches_one_image_at_a_time(tiny_toy_variant, tmp_path, keep,
                                                   weights_unchanged):
    model = load_variant("test_tiny_toy", seed=3)
    check = weights_unchanged(model)
    dataset = ToyDataset("val", n_per_class=1)
    removal = TokenRemoval(keep)
    res = open_store(extract(model, dataset, tmp_path, kinds=("resid_post",), batch_size=4,
                               perturbation=removal))
    check()
    assert res.perturbation == removal.config()
    layout = TokenLayout.of(model)
    lengths = set()
    for i in range(len(dataset)):
        kept = removal.kept(layout, res.token_class[i])
        lengths.add(len(kept))
        image, _, _, _ = dataset.load_with_mask(i)
        logits, token_logits = one_image_reference(model, TOY_PREPROCESS(image), kept)
        label = dataset.labels[i]
        order = torch.argsort(token_logits, dim=-1, descending=True, stable=True)
        rank = (order == label).int().argmax(-1).numpy()
        stored = res.rank[i, -1]
        assert np.array_equal(stored[kept], rank)
        assert np.all(stored[np.setdiff1d(np.arange(50), kept)] == -1)
        assert np.isnan(res.true_logit[i, -1, np.setdiff1d(np.arange(50), kept)]).all()
        assert np.allclose(res.true_logit[i, -1, kept], token_logits[:, label].numpy(),
                           atol=1e-5)
        assert res.pred[i] == int(logits.argmax())
    assert len(lengths) > 3  # the batches really mixed different lengths


def test_removal_of_nothing_equals_the_unperturbed_store(tiny_toy_variant, tmp_path):
    model = load_variant("test_tiny_toy", seed=3)
    dataset = ToyDataset("val", n_per_class=1)
    clean = open_store(extract(model, dataset, tmp_path, batch_size=8))
    everything = TokenRemoval("indices", indices=range(1, 50))
    kept = open_store(extract(model, dataset, tmp_path, batch_size=8,
                                perturbation=everything))
    assert kept.path != clean.path
    assert np.array_equal(kept.rank, clean.rank) and np.array_equal(kept.pred, clean.pred)
    assert np.allclose(kept.true_logit, clean.true_logit, atol=1e-6)


def test_removal_without_masks_is_refused(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny")
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    with pytest.raises(VitclsError, match="segmentation masks"):
        extract(model, dataset, tmp_path, perturbation=TokenRemoval("class"))
    with pytest.raises(VitclsError, match="image-token positions"):
        extract(model, dataset, tmp_path, perturbation=TokenRemoval("indices", indices=[0, 1]))
    with pytest.raises(VitclsError, match="keep must be"):
        TokenRemoval("object")


def test_attention_store_matches_a_hooked_forward(tiny_toy_variant, tmp_path):
    model = load_variant("test_tiny_toy", seed=3)
    dataset = ToyDataset("val", n_per_class=1)
    perturbation = AttentionPerturbation("self_only")
    res = open_store(extract(model, dataset, tmp_path, kinds=("resid_post",),
                               batch_size=8, perturbation=perturbation))
    images = torch.stack([TOY_PREPROCESS(dataset.load(i)[0]) for i in range(len(dataset))])
    logits, last = forward_with(model, images, perturbation)
    token_logits = ClassProjector(model)(last)
    labels = torch.tensor(dataset.labels)
    true = token_logits.gather(-1, labels[:, None, None].expand(-1, 50, 1))
    assert np.array_equal(res.rank[:, -1], (token_logits > true).sum(-1).numpy())
    assert np.array_equal(res.pred, logits.argmax(-1).numpy())


@pytest.mark.parametrize("text", ["self_only", "self_only+prefix", "no_cls", "no_cls+renorm@0,2",
                                  "keep_class", "keep_context+paper"])
def test_parse_perturbation_inverts_the_name(text):
    assert parse_perturbation(text).name == text
    assert perturbation_name(parse_perturbation(text).config()) == text


@pytest.mark.parametrize("text", ["self", "no_cls+prefix", "keep_class@1", "self_only@x"])
def test_parse_perturbation_rejects(text):
    with pytest.raises(VitclsError, match="unknown perturbation|self_only' only"):
        parse_perturbation(text)
