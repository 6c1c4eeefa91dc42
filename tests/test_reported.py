"""The paper's reported numbers: one well-formed file, read back faithfully."""
from __future__ import annotations

import pytest

from vitcls_utils.report import reported as paper, vilas_tables
from vitcls_utils.model.registry import VARIANTS


def test_reported_file_is_well_formed():
    frame = paper.reported()
    assert not frame.duplicated(["metric", "variant", "block"]).any()
    assert set(frame.variant) <= set(VARIANTS)
    assert frame.source.str.len().min() > 5
    assert set(frame.approximate) <= {"yes", "no"}
    assert set(frame.unit) <= {"%", "fraction", "paper AUC", "cosine", "percentage points",
                               "logit", "block", "identifiability"}


def test_lookup_and_side_by_side():
    assert paper.paper_value("identifiability_rate", "vit_b16_gap") == pytest.approx(52.089)
    assert paper.paper_value("identifiability_rate", "toy") is None
    assert paper.paper_value("block_change_rate", "vit_b32", block=11) == pytest.approx(0.89)
    table = vilas_tables.side_by_side("vit_b32", {"top1_accuracy": 80.0, "not_reported": 1.0})
    assert list(table.columns) == ["metric", "this run", "reported, ViT-B/32", "agreement",
                                   "source"]
    assert table["reported, ViT-B/32"].tolist()[0] == pytest.approx(81.71)
    assert table["reported, ViT-B/32"].isna().tolist() == [False, True]
    assert table.agreement.tolist() == ["differs by -1.71", "not reported"]


def test_each_run_is_set_beside_the_paper_model_it_can_be_read_against():
    assert paper.compared_with("vit_b32") == "vit_b32"
    assert paper.compared_with("vit_b16_random") == "vit_b16_random"  # a reported control
    assert paper.compared_with("toy") == "vit_b32"
    assert paper.compared_with("toy_gap") == "vit_b16_gap"
    assert paper.compared_with("vit_l16_random") is None  # no reported control
    assert paper.reported_label("toy") == "reported, ViT-B/32"
    assert paper.reported_value("identifiability_rate", "toy") == pytest.approx(60.7262)
    assert not paper.paper_series("identifiability_image", "toy").empty  # drawn beside the toy
    assert paper.paper_series("identifiability_image", "vit_l16_random").empty


@pytest.mark.parametrize("variant, value, verdict", [
    ("vit_b32", 61.2, "agrees (within 1)"),
    ("vit_b32", 55.0, "differs by -5.73"),
    ("vit_b32", None, "not computed in this run"),
    ("vit_b32", float("nan"), "not computed in this run"),
    ("toy", 96.3, "not comparable: a toy model on synthetic images beside the paper's "
                  "ViT-B/32 on ImageNet-S: shown for scale"),
    ("vit_l16_random", 1.0, "not reported"),
])
def test_agreement_says_how_this_run_stands_to_the_reported_value(variant, value, verdict):
    assert paper.agreement(variant, "identifiability_rate", value) == verdict


def test_paper_curves_of_deeper_models_sit_between_the_blocks_they_average():
    normalized = paper.paper_series("identifiability_image", "vit_l16")
    on_24 = paper.paper_curve("identifiability_image", "vit_l16", 24)
    assert (on_24.block.to_numpy() == 2 * normalized.block.to_numpy() - 0.5).all()
    assert on_24.value.tolist() == normalized.value.tolist()
    same = paper.paper_curve("identifiability_image", "vit_b16_refinement", 12)
    assert same.equals(paper.paper_series("identifiability_image", "vit_b16_refinement"))


def test_series_by_stacks_one_reported_line_per_level():
    import pandas as pd

    stacked = paper.series_by("memory_match_{}", "vit_b32", "layer", ("attn", "mlp"))
    by_hand = pd.concat([paper.paper_series(f"memory_match_{layer}", "vit_b32").assign(
        layer=layer) for layer in ("attn", "mlp")])
    pd.testing.assert_frame_equal(stacked, by_hand)
    assert set(stacked.layer) <= {"attn", "mlp"}
    relabelled = paper.series_by("memory_match_{}", "vit_b32", "line", {"mlp": "MLP"})
    assert set(relabelled.line) <= {"MLP"}


def test_ghiasi_tables_are_well_formed_and_agree_with_each_other():
    from vitcls_utils.model.registry import VARIANTS

    table1 = paper.ghiasi_table1()
    assert table1.source.str.len().min() > 0
    assert set(table1.variant) <= set(VARIANTS)
    # Table 1's isolating-[CLS] number is the L = 11 point of the logged sweep
    sweep = paper.ghiasi_sweep("isolate")
    assert sweep.set_index("L").top1[11] == paper.ghiasi_value("isolating_cls")
    assert sweep.set_index("L").top1[0] == paper.ghiasi_value("natural")
    assert paper.ghiasi_value("pooled_token", column="top5") is None
    table2 = paper.ghiasi_table2()
    assert set(table2.variant.dropna()) <= set(VARIANTS)
    # the normalised columns of Table 2 are in [0, 100] and below the full images' top-5
    assert ((table2.foreground > table2.background) & (table2.full_top5 <= 100)).all()
