"""Chapter 8's runner rules: the decomposition and ablation pages skip residual post-norm
models; the lens page runs on every ViT with a class head; nothing runs on a headless one."""
from __future__ import annotations

from vitcls_utils.model.registry import get_variant
from vitcls_utils.running import notebook_rules as rules

CHAPTER8 = ("readout_fig1_lens_comparison", "readout_fig2_decomposition",
            "readout_tab1_ablation")


def test_chapter8_is_in_the_book_and_its_rules_apply():
    assert rules.chapters()["chapter8"] == CHAPTER8
    ran = {key: {n for n in CHAPTER8 if rules.applies(n, get_variant(key), "toy")}
           for key in ("toy", "toy_gap", "vit_b16_random", "vit_orig_b16_in21k", "toy_convit")}
    assert ran["toy"] == set(CHAPTER8) and ran["vit_b16_random"] == set(CHAPTER8)
    assert ran["toy_gap"] == {"readout_fig1_lens_comparison"}
    assert ran["vit_orig_b16_in21k"] == set() and ran["toy_convit"] == set()
