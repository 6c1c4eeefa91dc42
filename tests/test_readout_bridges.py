"""Chapter 8's bridges: the readout table with probes, first blocks, the tuned-lens store
(identity lens = the plain store), the memory-head match against a hand count."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitcls_utils.analysis import identifiability, readout_bridges as rb, tuned_lens as tl
from vitcls_utils.analysis.logit_decomposition import decompose
from vitcls_utils.analysis.memories import Memories
from vitcls_utils.analysis.probing import ProbeResults
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.datasets.kinds import ToyDataset
from vitcls_utils.model.loading import load_variant
from vitcls_utils.stores.extraction import store_for
from vitcls_utils.stores.stimulus_loader import labelled_batches


@pytest.fixture
def toy_setup(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    stimuli = ToyDataset(n_per_class=1)
    return model, stimuli, tl.collect(model, stimuli, tokens_per_image=10 ** 6)


def test_identity_lens_store_equals_the_plain_store(toy_setup, tmp_path):
    model, stimuli, _ = toy_setup
    store = store_for(model.vitcls_info.variant.key, dataset="toy", n_per_class=1,
                      results_dir=str(tmp_path), device="cpu")
    decoded = rb.decoded_store(model, tl.TunedLens(model), store, stimuli)
    assert np.array_equal(decoded.rank, store.by_block("rank", "resid_post"))
    assert identifiability.headline(decoded) == identifiability.headline(store)
    # Table 1 under an identity lens: the same interval, and a paired difference of exactly 0
    from vitcls_utils.base.uncertainty import bootstrap
    from vitcls_utils.report import readout_tables as rt
    t1 = rt.table1_under_lenses(store, decoded)
    hits = store.by_block("rank", "resid_post")[:, -1, store.num_prefix:] == 0
    rate = bootstrap(100 * hits.mean(1))
    assert t1.loc["tuned lens", "95% CI"] == f"[{rate.low:.1f}, {rate.high:.1f}]"
    assert t1.iloc[1, 0] == pytest.approx(rate.estimate)
    difference = rt.table1_difference(store, decoded)
    assert (difference.low, difference.high, difference.p_value) == (0.0, 0.0, 1.0)
    with pytest.raises(VitclsError, match="stimuli|images"):
        rb.decoded_store(model, tl.TunedLens(model), store, ToyDataset(n_per_class=1,
                                                                        split="train"))


def test_readout_table_with_probes_counts_by_hand(toy_setup):
    model, _, test = toy_setup
    lens = tl.TunedLens(model)
    n_img, depth, n_tok = len(test.labels), len(model.blocks), 50
    rng = np.random.default_rng(0)
    top1 = rng.integers(0, 24, (n_img, depth, n_tok)).astype(np.int16)
    final = test.final.argmax(-1).numpy()
    top1[:, 2, 0] = final  # the [CLS] probe of block 3 always agrees with the model
    probes = ProbeResults([f"blocks.{b}.hook_resid_post" for b in range(depth)],
                          test.labels.numpy(), top1 * 0, top1, 1)
    table = rb.readout_table(lens, test, probes)
    row = table.query("kind == 'cls' and readout == 'probe' and block == 3").iloc[0]
    assert row.agreement == 1.0 and np.isnan(row.kl)
    image = table.query("kind == 'image' and readout == 'probe' and block == 2").iloc[0]
    assert image.agreement == pytest.approx((top1[:, 1, 1:] == final[:, None]).mean())
    assert image.agreement_images == pytest.approx((top1[:, 1, 1:] == final[:, None]).mean(1))
    first = rb.first_blocks(table, level=1.0)
    assert first.query("kind == 'cls' and readout == 'probe'").first_block.item() == 3
    # the plain readout's last block is the model's output for [CLS]
    assert first.query("kind == 'cls' and readout == 'plain'").first_block.item() == depth
    wrong = ProbeResults(probes.sites, probes.labels[::-1].copy() + 1, top1, top1, 1)
    with pytest.raises(VitclsError, match="other images"):
        rb.readout_table(lens, test, wrong)


def test_lens_for_trains_once_then_loads(toy_setup, tmp_path):
    model, stimuli, test = toy_setup
    path = tmp_path / "lens.safetensors"
    first = rb.lens_for(model, stimuli, test, path, steps=3)
    assert path.with_suffix(".json").is_file()
    again = rb.lens_for(model, stimuli, test, path, steps=3)
    assert torch.equal(first.weight, again.weight)
    assert again.card["training_split"] == "toy/val, 24 images"
    other = rb.lens_for(model, stimuli, test, path, steps=3, lr=1e-2)  # retrained, not loaded
    assert other.card["lr"] == 1e-2 and not torch.equal(other.weight, first.weight)


def test_memory_head_match_by_hand(toy_setup):
    model, stimuli, _ = toy_setup
    images, labels = next(labelled_batches(model, stimuli, 8, "x", False))
    dec = decompose(model, images, labels)
    memories = Memories.of(model)
    table = rb.memory_head_match(dec, memories, n_heads=2)
    d_head = 16
    for b in (0, 2):
        best = model.head.weight @ model.blocks[b].attn.proj.weight                # [C, D]
        owner = best.argmax(1)[labels] // d_head
        mine = dec.head_totals()[:, b].argmax(-1)
        assert table.match[b] == pytest.approx((mine == owner.numpy()).mean())
        per_image = rb.memory_head_matches(dec, memories, n_heads=2)[:, b]
        assert np.array_equal(per_image, (mine == owner.numpy()).astype(float))
    assert (table.chance == 0.5).all()


def test_lens_training_set_and_probe_identifiability():
    train = rb.lens_training_set("toy", None, 24, per_class=2)
    assert train.split == "train" and len(train) == 48
    rank = np.ones((2, 3, 5), np.int16)
    rank[0, 2, 1:3] = 0  # image 0: 2 of 4 image tokens identifiable at the last block
    rank[1, 1, 1:] = 0   # image 1: identifiable at block 2 only
    probes = ProbeResults([f"blocks.{b}.hook_resid_post" for b in range(3)], np.zeros(2),
                          rank, rank, 1)
    assert rb.probe_identifiability(probes) == pytest.approx(25.0)
