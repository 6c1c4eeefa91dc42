"""The embedded toy data and models: deterministic generation, masks in the ImageNet-S
encoding, scene bias, the shipped checkpoints, and a training smoke test."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vitcls_utils.datasets import toy
from vitcls_utils.training import toy_models as toy_training
from vitcls_utils.datasets.kinds import ToyDataset
from vitcls_utils.analysis.evaluation import evaluate
from vitcls_utils.datasets.masks import decode_mask
from vitcls_utils.model.registry import data_dir, get_variant
from vitcls_utils.model.loading import load_variant


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b = toy.generate("val", 17, seed=0), toy.generate("val", 17, seed=0)
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    c = toy.generate("val", 17, seed=1)
    assert c.image.tobytes() != a.image.tobytes()
    assert toy.generate("train", 17).image.tobytes() != a.image.tobytes()  # splits differ


def test_masks_labels_and_object_size():
    fractions = []
    for index in range(0, toy.split_size("val"), 7):
        sample = toy.generate("val", index)
        assert sample.label == index // toy.SPLIT_SIZES["val"]
        ids = decode_mask(sample.mask)
        assert set(np.unique(ids)) == {0, sample.label + 1}
        fractions.append((ids > 0).mean())
    assert 0.09 <= min(fractions) and max(fractions) <= 0.42
    assert len(toy.CLASS_NAMES) == toy.NUM_CLASSES >= 20


def test_background_carries_partial_class_evidence():
    samples = [toy.generate("val", i) for i in range(toy.split_size("val"))]
    preferred = np.mean([s.scene == toy.preferred_scene(s.label) for s in samples])
    assert 0.4 <= preferred <= 0.6


def test_toy_dataset_interface():
    dataset = ToyDataset("val", n_per_class=3)
    assert len(dataset) == 3 * toy.NUM_CLASSES
    assert dataset.labels[:4] == [0, 0, 0, 1]
    image, status, ids, category = dataset.load_with_mask(4)
    assert image.size == (56, 56) and category == 2 and ids.max() == 2
    assert dataset.fingerprint() == ToyDataset("val", n_per_class=3).fingerprint()
    assert dataset.fingerprint() != ToyDataset("val", n_per_class=3, seed=1).fingerprint()


@pytest.mark.parametrize("key", ["toy", "toy_gap", "toy_convit", "toy_deit"])
def test_shipped_checkpoints_reach_their_recorded_val_top1(key):
    record = json.loads((data_dir() / "toy" / "training.json").read_text())[key]
    path = data_dir() / "toy" / f"{key}.safetensors"
    assert path.stat().st_size <= 8 * 1024 * 1024
    model = load_variant(key)
    assert model.vitcls_info.weights_id.startswith(f"shipped:toy/{key}.safetensors")
    result = evaluate(model, ToyDataset("val"), progress=False)
    assert result["images"] == record["val_images"]
    assert result["correct"] == record["val_correct"]
    if key in ("toy", "toy_convit"):
        assert result["top1"] >= 0.90


def test_checkpoint_of_another_generator_version_is_refused(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from vitcls_utils.base.errors import WeightsError

    (tmp_path / "toy").mkdir()
    state = load_file(str(data_dir() / "toy" / "toy.safetensors"))
    stale = str(toy.GENERATOR_VERSION - 1)
    save_file(state, str(tmp_path / "toy" / "toy.safetensors"),
              metadata={"generator_version": stale})
    monkeypatch.setenv("VITCLS_DATA", str(tmp_path))
    with pytest.raises(WeightsError, match=f"version {stale}.*make toy-model"):
        load_variant("toy")
    load_variant("toy", weights=tmp_path / "toy" / "toy.safetensors")  # an explicit file loads


def test_toy_variants_layout():
    assert get_variant("toy").n_tokens == 50 and get_variant("toy_gap").n_tokens == 49
    assert get_variant("toy_random").base == "toy"


def test_avg_pool_loss_reads_the_mean_of_the_image_tokens():
    """The auxiliary readout equals timm's own average pooling of the same model (which skips
    the [CLS]), and leaves the model's output, the [CLS] readout, as it is."""
    import torch

    from vitcls_utils.model.loading import build_model

    model = build_model(get_variant("toy_random")).eval()
    x = torch.randn(3, 3, toy.IMAGE_SIZE, toy.IMAGE_SIZE)
    with torch.no_grad():
        features = model.forward_features(x)
        ours = toy_training.avg_pool_logits(model, features)
        token = model(x)
        model.global_pool = "avg"
        timm_avg = model.forward_head(features)
        model.global_pool = "token"
        assert torch.allclose(ours, timm_avg, atol=1e-6)
        assert not torch.allclose(ours, token, atol=1e-3)
        assert torch.equal(model.forward_head(features), token)


def test_training_is_seeded_changes_the_weights_and_writes_a_strict_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from vitcls_utils.model.loading import build_model

    recipe = {"steps": 3, "warmup_steps": 1, "batch_size": 8, "train_per_class": 1}
    records = [toy_training.train("toy", tmp_path / run, recipe, log=lambda *a: None)
               for run in ("a", "b")]
    first, second = (load_file(str(tmp_path / run / "toy.safetensors")) for run in ("a", "b"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same weights
    init = build_model(get_variant("toy"), seed=0).state_dict()
    assert any(not torch.equal(first[k], init[k]) for k in first)  # the steps moved them
    assert records[0]["val_top1"] == records[1]["val_top1"]
    assert records[0]["recipe"]["steps"] == 3
    load_variant("toy", weights=tmp_path / "a" / "toy.safetensors")  # loads strictly
    toy_training.write_model_card(records[:1], tmp_path)
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "val top-1" in card and f"{100 * records[0]['val_top1']:.2f}" in card


def test_toy_store_shows_the_papers_direction(tmp_path):
    """`extract --variant toy --data toy`: [CLS] becomes identifiable, image tokens grow more
    identifiable with depth, far above the random-init control."""
    from vitcls_utils.stores.extraction import extract, open_store
    from vitcls_utils.analysis.identifiability import evolution, identifiability_rate

    dataset = ToyDataset("val", n_per_class=5)
    res = open_store(extract(load_variant("toy"), dataset, tmp_path))
    rand = open_store(extract(load_variant("toy_random"), dataset, tmp_path))
    frame = evolution(res).pivot(index="block", columns="token", values="identifiability")
    assert frame["[CLS]"].iloc[-1] >= 0.99
    assert frame["image"].iloc[-1] > frame["image"].iloc[0] + 0.1
    assert frame["image"].iloc[-1] == frame["image"].max()
    assert identifiability_rate(res) > 5 * identifiability_rate(rand)


def test_two_objects_pastes_the_second_object():
    image, ids, (a, b) = toy.two_objects("val", 0, 20 * 7 + 3)
    first, second = toy.generate("val", 0), toy.generate("val", 20 * 7 + 3)
    pasted = np.asarray(second.mask)[..., 0] > 0
    assert (a, b) == (0, 7) and np.array_equal(ids[pasted], np.full(pasted.sum(), 8))
    assert np.array_equal(np.asarray(image)[pasted], np.asarray(second.image)[pasted])
    rest = ~pasted
    assert np.array_equal(np.asarray(image)[rest], np.asarray(first.image)[rest])
    assert set(np.unique(ids[rest])) <= {0, 1}
