"""Chapter 6's sentences read the numbers they are given: this run's and the paper's."""
import numpy as np
import pandas as pd

from vitcls_utils.base.uncertainty import paired_difference
from vitcls_utils.report import ghiasi_sentences


def test_the_isolation_sentence_reads_table_1_and_the_sweep():
    table = pd.DataFrame({"quantity": ["natural", "isolating [CLS] (L = 2)"],
                          "top-1, this run": [80.0, 60.0], "top-1, paper": [84.2, 76.6]})
    sweep = pd.DataFrame({"mode": ["drop"] * 3 + ["isolate"] * 3, "L": [1, 2, 3] * 2,
                          "top1": [10.0, 45.0, 80.0, 70.0, 60.0, 5.0]})
    text = ghiasi_sentences.isolation_sentence(table, sweep, depth=3, num_classes=24)
    assert "keeps 60.0% top-1 of the natural 80.0% (75% of it; the paper: 76.60 of 84.20, 91%)" \
        in text
    assert "half the natural accuracy at L = 2 of 3" in text
    assert "it is at 5.0% (chance 4.2%)" in text
    # with per-image outcomes: the paired loss and the difference from chance, each judged
    natural, isolated = np.r_[np.full(8, 100.0), 0, 0], np.r_[np.full(6, 100.0), 0, 0, 0, 0]
    full = np.zeros(10)
    per = sweep.assign(L=[1, 2, 3, 0, 2, 3],
                       top1_images=[natural] * 3 + [natural, isolated, full])
    text = ghiasi_sentences.isolation_sentence(table, per, depth=3, num_classes=24)
    loss = paired_difference(isolated, natural)
    assert loss.estimate == -20.0
    assert (f"paired over the same 10 images, isolation changes top-1 by {loss.format(1)} "
            f"points and its 95% CI {'excludes zero' if loss.excludes_zero else 'holds'}") in text
    assert "its difference from chance is -4.2 [-4.2, -4.2] points and its 95% CI excludes " \
        "zero" in text


def test_a_control_at_chance_gets_a_sentence_for_a_control():
    table = pd.DataFrame({"quantity": ["natural", "isolating [CLS] (L = 2)"],
                          "top-1, this run": [5.0, 4.2], "top-1, paper": [84.2, 76.6]})
    sweep = pd.DataFrame({"mode": ["drop"] * 3 + ["isolate"] * 3, "L": [1, 2, 3] * 2,
                          "top1": [4.0, 5.0, 5.0, 4.0, 4.2, 4.0]})
    text = ghiasi_sentences.isolation_sentence(table, sweep, depth=3, num_classes=24)
    assert "about chance (4.2%)" in text and "keeps 4.2% of the natural" not in text


def table2(vit_bg, cnn_bg, vit_bg1, cnn_bg1):
    return pd.DataFrame([
        {"model": "Toy ViT", "source": "this run", "full": 100.0, "foreground": 99.0,
         "background": vit_bg, "top-1 full": 90.0, "top-1 foreground": 80.0,
         "top-1 background": vit_bg1},
        {"model": "Toy CNN (ResNet)", "source": "this run", "full": 100.0, "foreground": 99.0,
         "background": cnn_bg, "top-1 full": 90.0, "top-1 foreground": 80.0,
         "top-1 background": cnn_bg1},
        {"model": "ViT-B16", "source": "paper", "full": 99.2, "foreground": 95.6,
         "background": 31.6, "top-1 full": 92.4, "top-1 foreground": 86.6,
         "top-1 background": 15.7},
        {"model": "ResNet-50", "source": "paper", "full": 93.0, "foreground": 90.0,
         "background": 18.0, "top-1 full": 76.0, "top-1 foreground": 70.0,
         "top-1 background": 5.0}])


def test_table2_says_which_way_this_run_goes():
    assert "unlike the paper" in ghiasi_sentences.fgbg_sentence(table2(30.6, 39.4, 9.0, 12.0))
    assert "as in the paper" in ghiasi_sentences.fgbg_sentence(table2(40.0, 30.0, 12.0, 9.0))
    summary = ghiasi_sentences.table2_summary(table2(30.6, 39.4, 9.0, 12.0))
    assert summary["background (% of full top-5), Toy ViT"] == (30.6, 31.6, "ViT-B16")
    assert summary["background (% of full top-5), Toy CNN (ResNet)"] == (39.4, 18.0,
                                                                         "ResNet-50")


def test_table2_compares_the_background_shares_over_the_same_images():
    def outcomes(full, background):
        return pd.DataFrame({"edit": ["full", "background"],
                             "top5_images": [np.asarray(full, float), np.asarray(background, float)]})

    vit = outcomes([100, 100, 100, 100, 0], [100, 100, 0, 0, 0])
    cnn = outcomes([100, 100, 100, 100, 100], [0, 0, 0, 100, 0])
    text = ghiasi_sentences.fgbg_sentence(table2(30.6, 39.4, 9.0, 12.0),
                                          {"Toy ViT": vit, "Toy CNN (ResNet)": cnn})
    assert "Over the same 5 images, the ViT's background share minus the CNN's is 30.0 [" in text
    assert "its 95% CI" in text  # 2/4 - 1/5 = 0.30, as a share of each model's full top-5
    assert "Over the same" not in ghiasi_sentences.fgbg_sentence(table2(30.6, 39.4, 9.0, 12.0))


def test_the_patch_sentence_gives_intervals_and_pairs_the_last_two_blocks():
    from vitcls_utils.analysis.patch_readout import PatchReadout

    hits = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=bool)
    top1 = 100 * hits.mean(0)
    readout = PatchReadout(top1, top1, (1, 2), 50.0, 75.0, 25.0, 50.0, 4, patch_hits=hits,
                           model_top1_images=np.r_[100.0, 0, 100.0, 0],
                           pooled_top1_images=np.r_[100.0, 0, 0, 0])
    later, earlier = np.r_[50.0, 100.0, 0.0, 50.0], np.r_[0.0, 50.0, 0.0, 0.0]
    per_block = pd.DataFrame({"block": [2, 1], "image_top1": [50.0, 12.5],
                              "image_top1_images": [later, earlier]})
    sentence = ghiasi_sentences.patch_sentence(readout, per_block)
    step = paired_difference(later, earlier)
    assert f"{step.format(1)} points against the block before" in sentence
    assert "50.0 [" in sentence and "(50.0%)" in sentence and "95% CIs over the images" in sentence


def test_the_isolation_bridge_sentence_pairs_isolated_with_natural_over_images(tiny_toy_variant):
    from vitcls_utils.analysis import cls_isolation
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.model.loading import load_variant

    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    curves = cls_isolation.identifiability_by_block(model, data, [0, 3], batch_size=10,
                                                    progress=False)
    last = curves[curves.block == 3].set_index("L")
    # every L reads the same images in the same order, so two L's values pair over images
    assert last.cls_identifiability_images[0].shape == (24,)
    gap = paired_difference(last.image_identifiability_images[3],
                            last.image_identifiability_images[0])
    text = ghiasi_sentences.cls_bridge_sentence(curves, 0.5)
    assert f"isolated minus natural {gap.format(3)}, paired over the same images" in text
    assert "Isolated up to L = 3" in text and "correlation of 0.50 (over the L values" in text
