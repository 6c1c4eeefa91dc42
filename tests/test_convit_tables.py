"""Chapter 7's tables: this run set beside the right paper row, for the toy pair, the real
sizes and their controls."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitcls_utils.analysis.identifiability import first_block_reaching
from vitcls_utils.report import convit_tables as tables


def accuracy(names):
    return pd.DataFrame({"mask": names, "top1": np.arange(len(names), dtype=float),
                         "top5": 50.0})


MASKS = ["unmasked", "position embedding zeroed", "content masked, first 3",
         "position masked, first 10"]


def test_paper_keys_of_the_toy_pair_the_sizes_and_the_controls():
    assert tables.paper_key("toy_convit") == "convit_tiny"
    assert tables.paper_key("toy_deit_random") == "deit_tiny"
    assert tables.paper_key("convit_small_random") == "convit_small"
    assert tables.paper_label("toy_convit") == "paper: ConViT-Ti, ImageNet val"


def test_masking_finds_tables_5_and_6_where_they_have_the_model():
    table = tables.masking({"toy_convit": accuracy(MASKS), "deit_small": accuracy(MASKS[:2]),
                            "convit_base": accuracy(MASKS)})
    paper = table.set_index(["model", "mask"])["top-1, paper"]
    assert paper[("Toy ConViT", "unmasked")] == 73.1
    assert paper[("Toy ConViT", "position embedding zeroed")] == 67.1
    assert paper[("Toy ConViT", "content masked, first 3")] == 62.3
    assert paper[("Toy ConViT", "position masked, first 10")] == 46.8
    assert paper[["DeiT-S", "ConViT-B"]].isna().all()  # the paper masks Ti models only
    assert list(table["top-1, this run"][:4]) == [0.0, 1.0, 2.0, 3.0]
    assert set(table["top-1, 95% CI"]) == {"–"}  # no image count given
    counted = tables.masking({"toy_convit": accuracy(MASKS).assign(top1=50.0, images=40)})
    assert counted["top-1, 95% CI"].tolist() == [tables.top1_interval(50.0, 40)] * 4
    low, high = (float(x) for x in counted["top-1, 95% CI"][0].strip("[]").split(", "))
    assert 30 < low < 50 < high < 70  # ±16 points at n = 40
    # the cost of zeroing the position embedding, paired over the images by hand
    from vitcls_utils.base.uncertainty import bootstrap
    right, zeroed = np.r_[np.full(30, 100.0), np.zeros(10)], np.r_[np.full(20, 100.0), np.zeros(20)]
    outcomes = accuracy(MASKS[:2]).assign(images=40, top1_images=[right, zeroed])
    costs = tables.zeroing_costs({"toy_convit": outcomes, "deit_small": accuracy(MASKS[:2])})
    assert list(costs) == ["Toy ConViT"] and costs["Toy ConViT"].estimate == 25.0
    by_hand = bootstrap(right - zeroed)  # ten images lost, none gained
    assert (costs["Toy ConViT"].low, costs["Toy ConViT"].high) == (by_hand.low, by_hand.high)


def test_zoo_gates_and_sample_efficiency_beside_the_paper():
    zoo = tables.zoo({"convit_small": {"top1": 80.0, "top5": 95.0, "params": 27e6},
                      "toy_deit": {"top1": 70.0, "top5": 90.0, "params": 6e5}})
    assert list(zoo["top-1, paper"]) == [81.3, 72.2] and list(zoo["paper model"]) == [
        "ConViT-S", "DeiT-Ti"]
    assert np.isnan(zoo["top-5, paper"].iloc[1])  # the paper gives no DeiT top-5
    assert list(zoo["top-1, 95% CI"]) == ["–", "–"]  # no image count given
    counted = tables.zoo({"toy_deit": {"top1": 75.0, "top5": 90.0, "params": 6e5, "images": 8}})
    from vitcls_utils.base.uncertainty import bootstrap
    assert counted["top-1, 95% CI"][0] == bootstrap(np.r_[np.full(6, 100.0), 0, 0]).bounds(1)
    first, second = np.r_[np.full(6, 100.0), 0, 0], np.r_[np.full(4, 100.0), 0, 0, 0, 0]
    gap = tables.top1_gap(first, second)
    assert gap.estimate == 25.0 and gap.n == 8 and gap.p_value < 1
    gates = pd.DataFrame({"layer": [2, 2, 2, 2], "head": [1, 2, 3, 4], "gate": [.1, .2, .3, .4]})
    check = tables.gates_check(gates, "toy_convit")
    assert list(check[check.layer == 2]["gate, this run"]) == [.1, .2, .3, .4]
    assert check[check.layer == 10]["gate, this run"].isna().all()
    assert tables.paper_gates("convit_base").empty
    runs = pd.DataFrame({"key": ["toy_deit", "toy_convit"] * 2, "fraction": [0.1, 0.1, 1.0, 1.0],
                         "val_top1": [0.4, 0.5, 0.8, 0.8], "val_top5": [0.7, 0.8, 1.0, 1.0]})
    frame = tables.sample_efficiency(runs).set_index("fraction")
    assert frame.loc[0.1, "gap (%), this run"] == pytest.approx(25.0)
    assert frame.loc[0.1, "gap (%), paper"] == 24 and frame.loc[1.0, "ConViT-S top-1, paper"] == 81.4


def test_bridge_puts_gates_only_beside_the_model_that_has_them():
    per_image = [np.array([0.4, 0.6]), np.array([0.6, 0.8]), np.array([0.9, 0.9])]
    evolution = pd.DataFrame({"block": [1, 2, 2], "token": ["image", "image", "[CLS]"],
                              "identifiability": [0.5, 0.7, 0.9],
                              "identifiability_images": per_image})
    distance = pd.DataFrame({"block": [1, 1, 2, 2], "head": [0, 1, 0, 1],
                             "distance": [1.0, 2.0, 3.0, 5.0]})
    gates = pd.DataFrame({"layer": [1, 1], "head": [1, 2], "gate": [0.2, 0.4]})
    frame = tables.bridge({"DeiT": evolution, "ConViT": evolution},
                          {"DeiT": distance, "ConViT": distance}, {"ConViT": gates})
    conv = frame[frame.model == "ConViT"].set_index("block")
    assert conv.gate[1] == pytest.approx(0.3) and np.isnan(conv.gate[2])
    assert frame[frame.model == "DeiT"].gate.isna().all()
    assert np.isnan(conv.cls_identifiability[1]) and conv.cls_identifiability[2] == 0.9
    assert list(conv.nonlocality) == [1.5, 4.0]
    assert first_block_reaching(frame, 0.6, model="ConViT") == 2
    assert first_block_reaching(frame, 0.95, model="ConViT") is None
    # each identifiability with its interval over the images; none where the token is absent
    from vitcls_utils.base.uncertainty import bootstrap
    assert conv.loc[2, "image_identifiability, 95% CI"] == (
        f"[{bootstrap(per_image[1]).low:.3f}, {bootstrap(per_image[1]).high:.3f}]")
    assert conv.loc[2, "cls_identifiability, 95% CI"] == "[0.900, 0.900]"  # no spread: exact
    assert conv.loc[1, "cls_identifiability, 95% CI"] == "–"


def test_a_sweep_still_running_shows_the_fractions_it_has_or_says_what_to_run():
    from vitcls_utils.base.errors import VitclsError

    runs = pd.DataFrame({"key": ["toy_deit", "toy_convit", "toy_deit"], "fraction": [1.0, 1.0, 0.1],
                         "val_top1": [0.8, 0.9, 0.5], "val_top5": [1.0, 1.0, 0.8]})
    assert list(tables.sample_efficiency(runs).fraction) == [1.0]
    with pytest.raises(VitclsError, match="make sample-efficiency"):
        tables.sample_efficiency(runs[runs.key == "toy_deit"])


def test_the_wide_bridge_table_has_a_column_per_quantity_and_model():
    evolution = pd.DataFrame({"block": [1, 2], "token": ["image", "image"],
                              "identifiability": [0.5, 0.7],
                              "identifiability_images": [np.r_[0.4, 0.6], np.r_[0.6, 0.8]]})
    distance = pd.DataFrame({"block": [1, 2], "head": [0, 0], "distance": [1.0, 3.0]})
    gates = pd.DataFrame({"layer": [1], "head": [1], "gate": [0.2]})
    wide = tables.bridge_wide(tables.bridge({"ConViT": evolution, "DeiT": evolution},
                                            {"ConViT": distance, "DeiT": distance},
                                            {"ConViT": gates}))
    assert list(wide.columns) == [("image tokens", "ConViT"), ("image tokens", "DeiT"),
                                  ("image tokens, 95% CI", "ConViT"),
                                  ("image tokens, 95% CI", "DeiT"),
                                  ("[CLS], 95% CI", "ConViT"), ("[CLS], 95% CI", "DeiT"),
                                  ("nonlocality", "ConViT"), ("nonlocality", "DeiT"),
                                  ("mean gate", "ConViT")]
    assert wide.loc[1, ("mean gate", "ConViT")] == 0.2


def test_nonlocality_inputs_follow_the_profile_unless_the_notebook_sets_them():
    from vitcls_utils.base.errors import VitclsError

    assert tables.nonlocality_inputs("corrected") == "real"
    assert tables.nonlocality_inputs(None) == "real"
    assert tables.nonlocality_inputs("authors") == "authors"
    assert tables.nonlocality_inputs("paper") == "authors"  # the old name of the profile
    assert tables.nonlocality_inputs("authors", "real") == "real"
    with pytest.raises(VitclsError, match="inputs must be one of"):
        tables.nonlocality_inputs("corrected", "embedding")


def test_table2_intervals_are_over_the_images_with_one_seed_and_across_seeds_with_several():
    from vitcls_utils.base.uncertainty import across_seeds, bootstrap, unpaired_difference

    runs = pd.DataFrame({"key": ["toy_deit", "toy_convit"], "fraction": [0.1, 0.1],
                         "seed": [0, 0], "val_top1": [0.5, 0.75], "val_top5": [1.0, 1.0],
                         "val_images": [40, 40]})
    row = tables.sample_efficiency(runs).iloc[0]
    deit, conv = (np.r_[np.full(k, 100.0), np.zeros(40 - k)] for k in (20, 30))  # by hand
    assert row["DeiT top-1, 95% CI"] == bootstrap(deit).bounds(1)
    assert bootstrap(conv).estimate == row["ConViT top-1, this run"]  # the old mean, exactly
    assert row["ConViT − DeiT (points) [95% CI]"] == unpaired_difference(conv, deit).format(1)
    seeds = pd.concat([runs, runs.assign(seed=1, val_top1=[0.6, 0.7])])
    row = tables.sample_efficiency(seeds).iloc[0]
    assert row["DeiT top-1, 95% CI"] == across_seeds([50.0, 60.0]).bounds(1)
    assert row["ConViT − DeiT (points) [95% CI]"] == across_seeds([25.0, 10.0]).format(1)


def test_the_nonlocality_table_bootstraps_each_images_mean_over_heads():
    from vitcls_utils.base.uncertainty import bootstrap

    heads = {(1, 1): np.r_[1.0, 2.0, 3.0], (1, 2): np.r_[3.0, 2.0, 2.0],
             (2, 1): np.r_[4.0, 4.5, 5.0], (2, 2): np.r_[4.0, 3.5, 3.0]}
    frame = pd.DataFrame([{"block": b, "head": h, "distance": v.mean(), "distance_images": v}
                          for (b, h), v in heads.items()])
    table = tables.nonlocality_table({"C": frame})
    by_hand = np.r_[2.0, 2.0, 2.5]  # block 1: each image's mean over its two heads
    assert table.loc[1, "C"] == pytest.approx(frame[frame.block == 1].distance.mean())
    assert table.loc[1, "C, 95% CI"] == (
        f"[{bootstrap(by_hand).low:.2f}, {bootstrap(by_hand).high:.2f}]")
    assert table.loc[2, "C, 95% CI"] == "[4.00, 4.00]"  # every image's mean is 4: exact
