"""Chapters 1-4's sentences read the numbers they are given, say when a run departs from the
paper's shape, and make sense for a random-init control."""
from __future__ import annotations

import pandas as pd

from vitcls_utils.report import vilas_sentences


def rates(mlp_image):
    return pd.DataFrame({"block": range(2, 2 + len(mlp_image)), "layer": "mlp",
                         "token": "image", "rate": mlp_image})


def test_the_mlp_sentence_says_whether_the_late_peak_is_there():
    # ViT-B/32's reported MLP change rate peaks at 0.66 in block 11
    flat = vilas_sentences.mlp_change_rate_sentence(rates([0.01] * 11), "toy")
    assert flat.startswith("Unlike the paper's ViT-B/32") and "0.66" in flat and "block 11" in flat
    peaked = vilas_sentences.mlp_change_rate_sentence(rates([0.2] * 9 + [0.5, 0.1]), "toy")
    assert peaked.startswith("Like the paper's ViT-B/32") and "0.50" in peaked
    none = vilas_sentences.mlp_change_rate_sentence(rates([0.2] * 11), "vit_l16_random")
    assert "reports no MLP change rate" in none


def test_the_compositionality_sentence_sides_with_the_reported_share():
    table = pd.DataFrame({"attn": [50.0, 68.0], "attn compositional": [50.0, 32.0]},
                         index=[11, 12])
    text = vilas_sentences.compositionality_sentence(table, "toy")  # the text: > 70%
    assert text.startswith("Unlike the paper's ViT-B/32 (more than 70% of tokens") \
        and "32% are here" in text
    cifar = vilas_sentences.compositionality_sentence(table, "vit_b16_cifar100")  # 73% match
    assert cifar.startswith("Like the paper's ViT-B/16-CIFAR100 (27% of tokens") 


def test_the_order_sentence_says_which_test_an_order_fails():
    areas = pd.DataFrame({"method": ["probe", "probe", "random", "random"],
                          "test": ["negative", "positive"] * 2, "auc": [0.7, 0.6, 0.8, 0.5]})
    text = vilas_sentences.order_sentence(areas, "probe", "probe")
    assert "no better than a random one in the negative and positive test" in text
    good = areas.assign(auc=[0.9, 0.3, 0.8, 0.5])
    assert "beats a random one in both tests" in vilas_sentences.order_sentence(good, "probe", "p")
    tests = pd.DataFrame({"method": ["probe", "probe"], "test": ["negative", "positive"],
                          "difference from random [95% CI]": ["0.10 [0.05, 0.15]",
                                                              "-0.01 [-0.05, 0.03]"],
                          "CI excludes zero": [True, False]})
    text = vilas_sentences.order_sentence(good, "probe", "p", tests)
    assert "negative test 0.10 [0.05, 0.15] (its 95% CI excludes zero)" in text
    assert "positive test -0.01 [-0.05, 0.03] (its 95% CI holds zero: not resolved)" in text


def test_the_evolution_sentence_makes_sense_for_a_control_and_for_no_block():
    assert "block 3" in vilas_sentences.evolution_sentence(0.91, 3, False)
    assert "No block is significantly" in vilas_sentences.evolution_sentence(0.6, None, False)
    control = vilas_sentences.evolution_sentence(0.5, None, True)
    assert "random-init control itself" in control and "none" not in control
    import numpy as np

    from vitcls_utils.base.uncertainty import bootstrap

    values = np.r_[0.9, 0.95, 0.99, 0.85, 0.97]
    text = vilas_sentences.evolution_sentence(values.mean(), 3, False, values)
    assert f"is {bootstrap(values).format(3)} (95% CI over the images" in text
    assert "the interval lies above chance" in text and "block 3" in text
    near = vilas_sentences.evolution_sentence(0.5, None, False, np.r_[0.3, 0.7, 0.45, 0.55])
    assert "holds chance: not resolved" in near


def test_the_drop_sentence_says_whether_each_interval_excludes_zero():
    table = pd.DataFrame({"run": ["unperturbed", "self_only", "no_cls"],
                          "drop, 95% CI (paired)": ["–", "86.28 [84.10, 88.00]",
                                                    "0.10 [-0.20, 0.40]"]})
    text = vilas_sentences.drop_sentence(table, "run")
    assert "self_only 86.28 [84.10, 88.00] points (its 95% CI excludes zero)" in text
    assert "no_cls 0.10 [-0.20, 0.40] points (its 95% CI holds zero: not resolved)" in text
    assert "unperturbed" not in text
    assert vilas_sentences.drop_sentence(table.iloc[:1], "run") == ""
