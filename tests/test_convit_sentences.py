"""Chapter 7's sentences read the numbers they are given: this run's and the paper's."""
from __future__ import annotations

import numpy as np
import pandas as pd

from vitcls_utils.report import convit_sentences


def test_the_sentences_read_the_numbers_they_are_given():
    gates = pd.DataFrame({"layer": [1, 1, 2, 2, 3, 3], "head": [1, 2] * 3,
                          "gate": [0.9, 0.7, 0.3, 0.1, 0.05, 0.05]})
    text = convit_sentences.gating_sentence(gates, "toy_convit")
    assert text.startswith("The mean gate falls from 0.80 in layer 1 to 0.05 in layer 3;")
    assert "still used up to layer 2" in text and "ConViT-Ti's printed gates" in text
    flat = gates.assign(gate=0.05)
    assert "no layer keeps a mean gate above 0.1" in convit_sentences.gating_sentence(flat, "convit_base")

    names = ["unmasked", "position embedding zeroed", "content masked, first 3",
             "position masked, first 3"]
    top1 = pd.Series([90.0, 80.0, 50.0, 40.0, 85.0, 60.0],
                     index=pd.MultiIndex.from_tuples(
                         [("C", n) for n in names] + [("D", n) for n in names[:2]]))
    text = convit_sentences.masking_sentence(top1, "C", "D", deepest=3)
    assert "costs C 10.0 points and D 25.0" in text
    assert "6.0 for ConViT-Ti, 33.9 for DeiT-Ti" in text  # Table 5: 73.1-67.1, 72.2-38.3
    assert "With content masked, first 3, C keeps 50.0% top-1." in text
    assert "1.3% with content masked, 46.8% with position masked" in text  # Table 6, k = 10
    from vitcls_utils.base.uncertainty import Interval
    costs = {"C": Interval(10.0, 4.0, 16.0, 20), "D": Interval(25.0, -1.0, 50.0, 20)}
    text = convit_sentences.masking_sentence(top1, "C", "D", deepest=3, costs=costs)
    assert ("costs C 10.0 points and D 25.0; paired over the same 20 images: C 10.0 [4.0, "
            "16.0] (its 95% CI excludes zero); D 25.0 [-1.0, 50.0] (its 95% CI holds zero: "
            "not resolved) (the paper") in text

    text = convit_sentences.maps_sentence(2, np.array([0.1, 0.7]), np.array([0.3, 0.4]))
    assert "between 0.10 and 0.70" in text and "a spread of 0.60 against 0.10" in text


def test_the_bridge_sentence_reads_the_frame_and_the_masks():
    frame = pd.DataFrame({"model": ["C"] * 3 + ["D"] * 3, "block": [1, 2, 3] * 2,
                          "image_identifiability": [0.2, 0.8, 0.9, 0.5, 0.6, 0.95],
                          "gate": [0.9, 0.5, np.nan, np.nan, np.nan, np.nan],
                          "image_identifiability_images": [np.full(4, v) for v in (
                              0.2, 0.8, 0.9, 0.5, 0.6, 0.95)]})
    final = {"unmasked": np.r_[0.8, 1.0, 0.9, 0.9], "z": np.r_[0.8, 0.8, 0.8, 0.8],
             "c": np.r_[0.1, 0.5, 0.3, 0.3], "p": np.r_[0.9, 0.3, 0.2, 0.2]}
    masked = pd.DataFrame({"mask": ["unmasked", "z", "c", "p"] * 2, "block": [2] * 4 + [3] * 4,
                           "image_identifiability": [0, 0, 0, 0, 0.9, 0.8, 0.3, 0.4],
                           "image_identifiability_images": [np.zeros(4)] * 4 + list(
                               final.values())})
    text = convit_sentences.bridge_sentence(frame, masked, "C", "D", 2, ["z", "c", "p"])
    assert "reach an identifiability of 0.75 at block 2, those of D at block 3" in text
    assert "stand at 0.90 and 0.95, a difference of -0.05 [-0.05, -0.05] (paired" in text
    assert "content in all 2 GPSA blocks leaves the image tokens' identifiability at 0.30" in text
    from vitcls_utils.base.uncertainty import paired_difference
    change = paired_difference(final["c"], final["unmasked"])
    assert f"at 0.30 ({change.format(2)} against unmasked; its 95% CI excludes zero)" in text
    assert "(unmasked 0.90; each change paired over the same images)" in text
    assert "position embedding at 0.80 (" in text


def test_the_locality_sentence_names_the_heads_without_a_centre_and_says_why():
    local = pd.DataFrame({"layer": [1, 1, 2, 2, 3], "head": [1, 2, 1, 2, 1],
                          "strength": [0.8, 1.2, -0.25, 0.5, 0.0],
                          "centre_x": [0.1, 0.2, np.nan, 0.3, np.nan],
                          "centre_y": [0.0, 0.1, np.nan, 0.2, np.nan],
                          "gate": [0.7, 0.6, 0.02, 0.5, 0.4]})
    text = convit_sentences.locality_sentence(local)
    assert text.startswith("2 of the 5 GPSA heads have a locality strength α ≤ 0")
    assert ("(layer 2: head 1 (α = -0.25, gate 0.02); layer 3: head 1 (α = 0.00, gate 0.40))"
            in text)
    assert "α < 0 a bowl rising towards its edges" in text
    every = convit_sentences.locality_sentence(local[local.strength > 0])
    assert every.startswith("All 3 GPSA heads have a positive locality strength α (from 0.50 "
                            "to 1.20)")


def test_the_efficiency_sentence_says_whether_each_difference_is_resolved():
    from vitcls_utils.report import convit_tables

    runs = pd.DataFrame({"key": ["toy_deit", "toy_convit"] * 2, "fraction": [0.1, 0.1, 1.0, 1.0],
                         "seed": 0, "val_top1": [0.5, 0.9, 0.8, 0.8], "val_top5": 1.0,
                         "val_images": 100})
    text = convit_sentences.efficiency_sentence(convit_tables.sample_efficiency(runs), runs)
    assert text.startswith("With 0.1 of the toy training set the toy ConViT reaches 90.0%")
    assert "ConViT − DeiT 40.0 [" in text and "points, its 95% CI excludes zero)" in text
    assert "ConViT − DeiT 0.0 [" in text and "its 95% CI holds zero: not resolved" in text


def test_the_nonlocality_sentence_counts_the_layers_whose_paired_interval_is_below_zero():
    rng = np.random.default_rng(0)

    def frame(means):
        return pd.DataFrame([{"block": b + 1, "head": 1, "distance": m,
                              "distance_images": m + rng.normal(0, 0.05, 12)}
                             for b, m in enumerate(means)])

    frames = {"C": frame([1.0, 3.0, 2.9, 3.5]), "D": frame([2.0, 2.95, 3.0, 3.4])}
    text = convit_sentences.nonlocality_sentence(frames, n_gpsa=3)
    assert text.startswith("In 2 of its 3 GPSA layers C is less nonlocal than D, and in 2 of")
    assert "most local layer is layer 1" in text and "D's nonlocality goes from" in text
