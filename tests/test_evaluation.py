"""`vitcls evaluate`: the top-1 of any model with a class head, ViT or CNN, against a second
computation; a model without one is refused with the reason, before its weights load."""
from __future__ import annotations

import pytest
import torch

from vitcls_utils.analysis.evaluation import evaluate
from vitcls_utils.base.errors import NoClassHeadError
from vitcls_utils.datasets.kinds import ToyDataset
from vitcls_utils.model.loading import load_variant
from vitcls_utils.running.cli import main


def test_a_cnn_gets_its_top1(tiny_cnn_variant):
    """Issue 35, item 10: a CNN once failed with AttributeError 'patch_embed'."""
    model, stimuli = load_variant("test_tiny_cnn"), ToyDataset(n_per_class=1)
    result = evaluate(model, stimuli, batch_size=8, progress=False)
    preprocess = tiny_cnn_variant.preprocess
    images = torch.stack([preprocess(stimuli.load(i)[0]) for i in range(len(stimuli))])
    expected = (model(images).argmax(-1) == torch.tensor(stimuli.labels)).sum().item()
    assert result["correct"] == expected and result["images"] == len(stimuli) == 24


def test_the_cli_evaluates_the_cnns(capsys, tmp_path):
    from conftest import write_image

    assert main(["evaluate", "--variant", "toy_cnn", "--data", "toy", "--n-per-class", "1",
                 "--quiet"]) == 0
    assert "toy_cnn on toy: top-1" in capsys.readouterr().out
    write_image(tmp_path / "n01440764" / "a.jpg", seed=1, size=(64, 64))
    assert main(["evaluate", "--variant", "resnet50_tv_random", "--data", "folder",
                 "--data-dir", str(tmp_path), "--quiet"]) == 0
    assert "resnet50_tv_random on folder: top-1" in capsys.readouterr().out


@pytest.mark.parametrize("key, why", [("clip_b32_random", "a CLIP image tower"),
                                      ("vit_orig_b16_in21k_random", "an ImageNet-21k checkpoint")])
def test_a_model_without_a_class_head_is_refused(key, why, capsys, monkeypatch):
    """Issue 35, items 5 and 16: once "top-1 0.00%", an argmax over 768 features; and a CLIP
    tower is no ImageNet-21k checkpoint."""
    from vitcls_utils.model import loading

    monkeypatch.setattr(loading, "load_variant", lambda *a, **k: pytest.fail("loaded"))
    assert main(["evaluate", "--variant", key, "--data", "toy"]) == 2
    err = capsys.readouterr().err
    assert f"{key} has no class head ({why}" in err and "few-shot probe" in err
    assert err.count("\n") == 1 and ("CLIP" in err) == (key == "clip_b32_random")


def test_evaluate_refuses_a_loaded_model_without_a_head(tiny_toy_variant):
    from dataclasses import replace

    from vitcls_utils.model import registry

    headless = registry.register(replace(tiny_toy_variant, key="test_tiny_headless",
                                         num_classes=0, label_classes=24, family="clip"))
    try:
        model = load_variant(headless.key)
        with pytest.raises(NoClassHeadError, match="a CLIP image tower"):
            evaluate(model, ToyDataset(n_per_class=1), progress=False)
    finally:
        registry.VARIANTS.pop(headless.key)
