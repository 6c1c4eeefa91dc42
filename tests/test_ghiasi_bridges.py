"""Chapter 6's bridge tables: each mean with its interval over the units it averages (images,
or FFN units), the point estimate the old mean exactly, and the units counted by hand."""
import numpy as np
import pandas as pd

from vitcls_utils.analysis import featureviz, stimulus_edits as edits
from vitcls_utils.base.uncertainty import bootstrap, unpaired_difference
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.model.loading import load_variant
from vitcls_utils.report import ghiasi_bridges as bridges, ghiasi_figures, ghiasi_sentences
from vitcls_utils.report import ghiasi_tables, vilas_figures as plots


def test_strong_units_and_their_agreement_per_block_with_intervals_over_units(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    top = featureviz.top_images(model, data, k=4, progress=False)
    names = [f"c{i}" for i in range(24)]
    strong = bridges.strong_unit_agreement(model, data, names, per_block=2, k=4, top=top)
    assert list(zip(strong.block, strong.unit)) == [
        (b + 1, u) for b, u in ghiasi_tables.pick_units(top, range(3), 2)]
    per_block = bridges.agreement_by_block(strong, strong)
    assert list(per_block.block) == [1, 2, 3] and per_block.units.tolist() == [2, 2, 2]
    assert per_block.agreement.tolist() == per_block.control.tolist()
    # the same units twice, but resampled as two samples: a zero difference that is not exact
    assert per_block["trained − control [95% CI]"].str.startswith("0.00 [").all()
    plots.plt.close(ghiasi_figures.agreement_figure(per_block, "t"))


def test_agreement_intervals_resample_units_and_the_control_is_an_unpaired_difference():
    scored = pd.DataFrame({"block": [1] * 6 + [2] * 6, "chance": 0.2,
                           "agreement": [0.2, 0.4, 0.2, 0.0, 0.6, 0.2,
                                         0.8, 1.0, 0.6, 0.8, 1.0, 0.6]})
    control = scored.assign(agreement=[0.2, 0.0, 0.2, 0.4, 0.0, 0.2] * 2).iloc[:10]
    table = bridges.agreement_by_block(scored, control).set_index("block")
    ours = np.array([0.8, 1.0, 0.6, 0.8, 1.0, 0.6])
    assert table.agreement[2] == ours.mean()  # the old mean, exactly
    assert table.loc[2, "95% CI"] == f"[{bootstrap(ours).low:.2f}, {bootstrap(ours).high:.2f}]"
    gap = unpaired_difference(ours, [0.2, 0.0, 0.2, 0.4])
    assert table.loc[2, "trained − control [95% CI]"] == gap.format(2) and gap.excludes_zero
    sentence = ghiasi_sentences.memories_bridge_sentence(scored, control)
    assert "over its 6 units" in sentence and "lies above chance" in sentence
    assert "its 95% CI excludes zero" in sentence and "block 2" in sentence


def test_the_edits_table_and_sentence_bootstrap_each_images_values(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    chosen = list(ghiasi_tables.FGBG) + edits.lowpass_edits([3])[1:]
    result = edits.evaluate_edits(model, data, chosen, by_block=True, batch_size=16,
                                  num_workers=0, progress=False)
    table = bridges.last_block_table(result).set_index("edit")
    last = result["blocks"].query("block == 3").set_index("edit")
    for edit in table.index:
        per_image = last.image_identifiability_images[edit]
        assert per_image.mean() == table.loc[edit, "image tokens"]  # the old mean, exactly
        assert table.loc[edit, "image tokens, 95% CI"] == (
            f"[{bootstrap(per_image).low:.3f}, {bootstrap(per_image).high:.3f}]")
    top1 = result["accuracy"].set_index("edit").top1_images["background"]
    assert table.loc["background", "top-1, 95% CI"].startswith(f"[{bootstrap(top1).low:.1f}")
    sentence = ghiasi_sentences.edits_bridge_sentence(result)
    assert "against the full stimuli, paired over the same images" in sentence
    assert sentence.count("95% CI") == 2 and "lowpass 3" in sentence
