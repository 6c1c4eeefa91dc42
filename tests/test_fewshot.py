"""The few-shot protocol against second computations: big_vision's sampling on a small fake
pool; features against timm's pre-logits and the model's logits (the LSR solve itself is
tested in test_least_squares.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import fewshot
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import NoClassHeadError, VitclsError
from vitcls_utils.model.loading import load_variant
from vitcls_utils.model.layout import TokenLayout
from vitcls_utils.model.projection import ClassProjector


def test_sampling_reproduces_big_vision_on_a_fake_pool():
    labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2])
    for seed in range(3):
        orders = fewshot.class_orders(labels, 4, seed)
        rng = np.random.default_rng(seed)  # big_vision: one generator, classes in order
        for c in range(4):
            expected = np.where(labels == c)[0].copy()
            rng.shuffle(expected)
            np.testing.assert_array_equal(orders[c], expected)
        previous = np.array([], dtype=np.int64)
        for k in (1, 2, 3, 5):
            chosen = fewshot.shot_indices(orders, k)
            assert set(previous) <= set(chosen)  # nested: the k-shot set grows
            assert np.bincount(labels[chosen], minlength=4).tolist() == [
                min(k, int((labels == c).sum())) for c in range(4)]
            previous = chosen
    assert not np.array_equal(fewshot.shot_indices(fewshot.class_orders(labels, 4, 0), 2),
                              fewshot.shot_indices(fewshot.class_orders(labels, 4, 1), 2))


def test_accuracy_is_averaged_over_seeds_and_separable_data_is_read_perfectly():
    gen = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 12)
    centres = gen.normal(size=(5, 6)) * 10
    x = torch.from_numpy(centres[labels] + gen.normal(size=(60, 6)) * 0.1)
    frame = fewshot.fewshot_accuracy(x, labels, x, labels, 5, shots=(1, 5), seeds=3, l2=1.0)
    assert len(frame) == 2 * 3 and frame.accuracy.min() == 1.0
    noise = torch.from_numpy(gen.normal(size=(60, 6)))
    chance = fewshot.fewshot_accuracy(noise, labels, noise, labels, 5, shots=(1,), seeds=3)
    assert chance.accuracy.mean() < 0.6
    assert fewshot.usable_shots(labels[:-3], 8, (1, 5, 10, 25)) == [1, 5, 10, 25]  # as big_vision


def big_vision_shots(labels, num_classes, shots, seed):
    """big_vision's ``fewshot_lsr.Evaluator.compute_fewshot_metrics`` written out: {k: the
    training rows}, one entry per shot count asked for, whatever the classes hold."""
    rng = np.random.default_rng(seed)
    class_indices = [rng.permutation(np.where(labels == c)[0]) for c in range(num_classes)]
    results = {}
    for k in shots:
        results[k] = np.concatenate([indices[:k] for indices in class_indices], axis=0)
    return results


def test_a_short_class_keeps_every_shot_count_as_in_big_vision():
    # class 2 has 3 images, class 3 none, classes 0 and 1 have 12: the 5- and 10-shot sets
    # take class 2's three; big_vision runs every shot count all the same
    labels = np.array([0] * 12 + [1] * 12 + [2] * 3)
    np.random.default_rng(0).shuffle(labels)
    shots = (1, 5, 10)
    used = fewshot.usable_shots(labels, 4, shots)
    for seed in range(3):
        reference = big_vision_shots(labels, 4, shots, seed)
        assert used == list(reference)
        orders = fewshot.class_orders(labels, 4, seed)
        for k in used:
            np.testing.assert_array_equal(fewshot.shot_indices(orders, k), reference[k])
    assert fewshot.short_classes(labels, 4, 5) == [2] and fewshot.short_classes(labels, 4, 3) == []
    gen = np.random.default_rng(2)
    values = torch.from_numpy(gen.normal(size=(len(labels), 2, 6)))
    features = fewshot.Features(values={"cls": values}, labels=labels, top1=None,
                                positions=np.arange(len(labels)), blocks=[1, 2])
    table = fewshot.fewshot_by_block(features, features, 4, used, seeds=2, l2=1.0)
    assert sorted(table.shots.unique()) == list(reference)  # the table's columns
    note = fewshot.shots_note(labels, 4, used)
    assert "at 5 shots 1 of 3 classes" in note and "at 10 shots 1 of 3" in note
    assert "at 1 shots" not in note
    assert "whole pool" in fewshot.shots_note(labels, 4, (20,))
    assert fewshot.shots_note(labels, 4, (1, 3)) == ""
    assert fewshot.usable_shots(labels[:0], 4, shots) == []
    with pytest.raises(VitclsError, match="at least 1"):
        fewshot.usable_shots(labels, 4, (0, 5))


def test_bad_token_choices_are_refused():
    with pytest.raises(VitclsError, match="token choices"):
        fewshot.token_choices(TokenLayout(1, (2, 2), True), ["cls", "pooled"])


@pytest.fixture(scope="module")
def toy_val():
    return build_dataset("toy", None, num_classes=24, n_per_class=2)


def test_features_are_the_pre_logits_and_the_projection_is_the_models_answer(toy_val):
    for key, token in (("toy", "cls"), ("toy_gap", "mean")):
        model = load_variant(key)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        features = fewshot.token_features(model, toy_val, batch_size=16, progress=False)
        images = torch.stack([model.vitcls_info.variant.preprocess(toy_val.load(i)[0])
                              for i in range(len(toy_val))])
        with torch.no_grad():
            pre_logits = model.forward_head(model.forward_features(images), pre_logits=True)
            logits = model(images)
        torch.testing.assert_close(features.values[token][:, -1], pre_logits, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_array_equal(features.top1[token][:, -1], logits.argmax(-1).numpy())
        assert features.blocks == list(range(1, 13)) and len(features.labels) == 48
        assert ("cls" in features.values) == (key == "toy")
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_model_without_a_head_gets_features_and_a_clear_error_for_the_projection():
    model = load_variant("vit_orig_b32_in21k_random")
    with pytest.raises(NoClassHeadError, match="few-shot probe"):
        ClassProjector(model)
    images = build_dataset("toy", None, num_classes=24, n_per_class=1)  # resized to 224 px
    features = fewshot.token_features(model, images, blocks=[0, 11], patch=3, progress=False)
    assert features.top1 is None and features.blocks == [1, 12]
    assert {k: tuple(v.shape) for k, v in features.values.items()} == {
        t: (24, 2, 768) for t in ("cls", "mean", "patch")}
    assert fewshot.centre_patch(TokenLayout.of(model)) == 3 * 7 + 3
    table = fewshot.decoders_by_block(features, features, 24, shots=(1,), seeds=1)
    assert set(table.decoder) == {"1-shot LSR"}  # no projection without a head


def test_features_of_other_sites_are_those_sites_tokens_normalised(toy_val):
    from vitcls_utils.model.hooks import run_with_cache

    model = load_variant("toy")
    features = fewshot.token_features(model, toy_val, blocks=[4], tokens=["cls"],
                                      kind="mlp_out", progress=False)
    image = model.vitcls_info.variant.preprocess(toy_val.load(0)[0])[None]
    _, cache = run_with_cache(model, image, ["blocks.4.hook_mlp_out"])
    expected = ClassProjector(model).normalize(cache["blocks.4.hook_mlp_out"][:, 0])
    torch.testing.assert_close(features.values["cls"][:1, 0], expected)
    with pytest.raises(VitclsError, match="width"):
        fewshot.token_features(model, toy_val, kind="pattern", progress=False)
