"""The tuned class-space lens: identity at step 0, held-out KL lowered by training, saved and
loaded back identical, refused for another model."""
from __future__ import annotations

import json

import pytest
import torch

from vitcls_utils.analysis import tuned_lens as tl
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.datasets.kinds import ToyDataset
from vitcls_utils.model.loading import load_variant


@pytest.fixture(scope="module")
def lens_setup():
    from dataclasses import replace

    from conftest import TINY_TOY
    from vitcls_utils.model import registry

    variant = replace(TINY_TOY, key="test_lens_toy")
    registry.register(variant)
    model = load_variant(variant.key)
    with torch.no_grad():  # a random head is near-uniform; make the final distribution peaked
        model.head.weight.mul_(20)
    train = tl.collect(model, ToyDataset(split="train", n_per_class=2), tokens_per_image=4)
    test = tl.collect(model, ToyDataset(split="val", n_per_class=1), tokens_per_image=4)
    yield model, train, test
    registry.VARIANTS.pop(variant.key, None)


def test_step_zero_is_the_plain_readout_exactly(lens_setup):
    model, _, test = lens_setup
    lens = tl.TunedLens(model)
    for kind, feats in test.features.items():
        plain = lens.projector(feats)
        assert torch.equal(lens.logits(kind, feats), plain)
        assert torch.equal(lens.logits(kind, feats[1], block=1), plain[1])
    # the last block's [CLS] under the plain readout is the model's own output
    assert torch.allclose(torch.log_softmax(lens.projector(test.features["cls"][-1]), -1),
                          test.final, atol=1e-5)
    untrained = tl.train_lens(model, lens_setup[1], steps=0)
    assert not untrained.weight.any() and not untrained.bias.any()


def test_training_lowers_held_out_kl_and_the_table_is_consistent(lens_setup):
    model, train, test = lens_setup
    lens = tl.train_lens(model, train, steps=60, lr=3e-3, seed=1)
    table = tl.compare(lens, test)
    summary = tl.held_out_summary(table)
    for kind in ("cls", "image"):
        assert summary[kind]["tuned"] < 0.8 * summary[kind]["plain"]
    # second computation of one cell: KL of block 1's [CLS] from its definition
    x = test.features["cls"][0]
    p = test.final.exp()
    q = torch.softmax(lens.logits("cls", x, block=0), -1)
    expect = (p * (p.log() - q.log())).sum(-1).mean()
    row = table.query("kind == 'cls' and block == 1 and readout == 'tuned'").iloc[0]
    assert row.kl == pytest.approx(float(expect), rel=1e-4)
    assert set(table.readout) == {"plain", "tuned"} and len(table) == 2 * 2 * 3
    # per image: each image's own tokens, counted by hand; their mean is the pooled cell
    cell = table.query("kind == 'image' and block == 2 and readout == 'plain'").iloc[0]
    rows, final = test.rows["image"], test.final.argmax(-1)
    hit = (lens.projector(test.features["image"][1]).argmax(-1) == final[rows]).double()
    by_hand = [float(hit[rows == i].mean()) for i in range(len(test.labels))]
    assert cell.agreement_images == pytest.approx(by_hand)
    assert cell.agreement_images.mean() == pytest.approx(cell.agreement)
    assert cell.kl_images.mean() == pytest.approx(cell.kl, rel=1e-5)


def test_training_is_seeded(lens_setup):
    model, train, _ = lens_setup
    a = tl.train_lens(model, train, steps=5, seed=3)
    b = tl.train_lens(model, train, steps=5, seed=3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_saved_lens_loads_back_identical(lens_setup, tmp_path):
    model, train, test = lens_setup
    lens = tl.train_lens(model, train, steps=5)
    card = tl.save_lens(lens, tmp_path / "lens.safetensors",
                        tl.held_out_summary(tl.compare(lens, test)))
    meta = json.loads(card.read_text())
    assert meta["model"]["variant"] == "test_lens_toy" and meta["steps"] == 5
    assert meta["sites"][0] == "blocks.0.hook_resid_post" and "cls" in meta["held_out_kl"]
    back = tl.load_lens(model, tmp_path / "lens.safetensors")
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    x = test.features["image"]
    assert torch.equal(back.logits("image", x), lens.logits("image", x))


def test_load_refuses_a_missing_file_or_another_model(lens_setup, tmp_path):
    model, train, _ = lens_setup
    with pytest.raises(VitclsError, match="no tuned lens"):
        tl.load_lens(model, tmp_path / "none.safetensors")
    tl.save_lens(tl.train_lens(model, train, steps=0), tmp_path / "l.safetensors")
    with pytest.raises(VitclsError, match="trained on"):
        tl.load_lens(load_variant("toy"), tmp_path / "l.safetensors")
