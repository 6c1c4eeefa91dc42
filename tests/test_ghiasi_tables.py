"""Chapter 6's tables arrange the measurements without changing them, and the paper's numbers
sit beside this run's where the data files have them."""
import numpy as np
import pandas as pd
import pytest

from vitcls_utils.analysis import cls_isolation as isolation, featureviz, patch_readout
from vitcls_utils.report import (ghiasi_figures as ghiasi_plots, ghiasi_tables as ghiasi,
                                 vilas_figures as plots)
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.loading import load_variant


@pytest.fixture
def toy_run(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    return model, data


def test_table1_takes_the_sweep_at_depth_minus_one_and_the_papers_values(toy_run):
    model, data = toy_run
    sweep = isolation.sweep(model, data, progress=False)
    readout = patch_readout.patch_readout(model, data, progress=False)
    table = ghiasi.table1(sweep, readout, depth=3).set_index("quantity")
    isolated = sweep[(sweep["mode"] == "isolate") & (sweep.L == 2)].top1.iloc[0]
    assert table.loc["isolating [CLS] (L = 2)", "top-1, this run"] == isolated
    assert table.loc["Patch Average", "top-1, this run"] == pytest.approx(readout.top1.mean())
    assert table.loc["natural", "top-1, paper"] == 84.20
    assert np.isnan(table.loc["pooled token (not in Table 1)", "top-5, paper"])
    from vitcls_utils.base.uncertainty import bootstrap
    hits = np.r_[np.full(int(round(isolated * 24 / 100)), 100.0), np.zeros(24)][:24]
    assert sweep.images.eq(24).all()  # one image per toy class
    assert table.loc["isolating [CLS] (L = 2)", "top-1, 95% CI"] == bootstrap(hits).bounds(1)
    by_hand = bootstrap(100 * readout.patch_hits.sum(1) / readout.patch_hits.shape[1])
    assert table.loc["Patch Average", "top-1, 95% CI"] == by_hand.bounds(1)
    with pytest.raises(VitclsError, match="L = 2"):
        ghiasi.table1(sweep[sweep.L != 2], readout, depth=3)
    plots.plt.close(ghiasi_plots.isolation_figure(sweep, ghiasi.paper_sweeps(), "t"))
    plots.plt.close(ghiasi_plots.heatmap_figure(readout.heatmap(), "t"))


def test_drop_vs_identifiable_lines_up_each_L_with_the_natural_block(toy_run):
    model, data = toy_run
    drop = isolation.sweep(model, data, modes=("drop",), progress=False)
    curves = isolation.identifiability_by_block(model, data, [0, 2], progress=False)
    table = ghiasi.drop_vs_identifiable(drop, curves).set_index("L")
    natural = curves[curves.L == 0].set_index("block").cls_top1
    assert list(table.index) == [0, 1, 2, 3]
    assert np.isnan(table.loc[0, "[CLS] at block L: rank 0"])  # the embedding is not read
    assert table.loc[3, "[CLS] at block L: rank 0"] == natural[3]
    # dropping after the last block is the natural model: its top-1 equals the store-free
    # count of the [CLS] projection at the last block, which is the model's output
    assert table.loc[3, "drop patches after L: top-1"] == pytest.approx(natural[3])
    # intervals: the images' outcomes of each L, and the rank-0 share counted over the images
    from vitcls_utils.base.uncertainty import bootstrap
    row = drop.query("L == 1").iloc[0]
    hand = bootstrap(row.top1_images).bounds(1)
    assert table.loc[1, "95% CI"] == hand
    k = round(natural[3] * len(data) / 100)
    assert table.loc[3, "95% CI, rank 0"] == bootstrap(
        np.r_[np.full(k, 100.0), np.zeros(len(data) - k)]).bounds(1)
    assert table.loc[0, "95% CI, rank 0"] == "–"
    plots.plt.close(ghiasi_plots.block_curves_figure(curves, "L", "t"))


def test_table2_normalises_top5_and_appends_the_papers_rows():
    frame = pd.DataFrame({"edit": ["full", "foreground", "background"],
                          "top1": [90.0, 60.0, 10.0], "top5": [80.0, 40.0, 20.0],
                          "images": [10, 10, 10]})
    table = ghiasi.table2({"m": frame})
    from vitcls_utils.base.uncertainty import bootstrap
    nine_of_ten = bootstrap(np.r_[np.full(9, 100.0), 0.0])  # the images' outcomes
    assert table.loc[0, "top-1 full, 95% CI"] == nine_of_ten.bounds(1) == "[60.0, 100.0]"
    assert table.loc[1, "top-1 full, 95% CI"] == "–"  # the paper's rows
    ours = table.iloc[0]
    assert (ours.full, ours.foreground, ours.background) == (80.0, 50.0, 25.0)
    assert ours["top-1 background"] == 10.0
    assert len(table) == 1 + 8 and set(table.source[1:]) == {"paper (ImageNet train, boxes)"}
    plots.plt.close(ghiasi_plots.fgbg_figure(table, "t"))


def test_cutoffs_blocks_and_units():
    assert ghiasi.default_cutoffs(224) == (112, 80, 56, 40, 28, 20, 14, 10, 7)
    assert ghiasi.default_cutoffs(56) == (28, 20, 14, 10, 7, 5, 3)
    assert ghiasi.spread_blocks(12) == [0, 6, 11] and ghiasi.spread_blocks(2, 3) == [0, 1]
    assert ghiasi.units_parameter([(1, 5), [12, 0]], 12) == [(0, 5), (11, 0)]
    assert ghiasi.units_parameter(None, 12) is None
    with pytest.raises(VitclsError, match="1..12"):
        ghiasi.units_parameter([(0, 5)], 12)
    with pytest.raises(VitclsError, match="pairs"):
        ghiasi.units_parameter([(1, 2, 3)], 12)


def test_memory_agreement_counts_top_stimuli_of_promoted_classes(toy_run):
    model, data = toy_run
    top = featureviz.top_images(model, data, k=4, progress=False)
    units = ghiasi.pick_units(top, [0, 2], per_block=3)
    assert len(units) == 6 and {b for b, _ in units} == {0, 2}
    names = [f"c{i}" for i in range(24)]
    scored = featureviz.memory_agreement(model, data, top, units, names, k=4)
    for row, (block, unit) in zip(scored.itertuples(), units):
        promoted = set(featureviz.unit_classes(model, block, unit, 4))
        shown = [data.labels[i] for i in top.of(block, unit)]
        assert row.agreement == sum(c in promoted for c in shown) / 4
    assert scored.chance.iloc[0] == 4 / 24
    panel = featureviz.unit_panels(model, data, top, units[:1], featureviz.Recipe(steps=1,
                                                                                 copies=1),
                                   class_names=names, writes=2)[0]
    assert panel["caption"] == "writes: " + ",\n".join(
        names[c] for c in featureviz.unit_classes(model, *units[0], 2))


def test_box_convention_follows_the_profile_and_the_notes_say_what_was_read(tmp_path):
    assert ghiasi.box_convention("corrected") == "voc" and ghiasi.box_convention(None) == "voc"
    assert ghiasi.box_convention("authors") == "authors"
    assert ghiasi.box_convention("authors", "voc") == "voc"
    with pytest.raises(VitclsError, match="box convention"):
        ghiasi.box_convention("corrected", "pascal")
    masks = ghiasi.fgbg_notes(None, "voc")
    assert masks.startswith("This run's objects are the dataset's segmentation masks")
    assert "loses its first row and column" in masks and "all-black foreground" in masks
    assert "leaves out every image with no box of its own class" in masks
    assert "read as VOC (1-based" in ghiasi.fgbg_notes(str(tmp_path), "voc")
    assert "one row and one column short" in ghiasi.fgbg_notes(str(tmp_path), "authors")
    assert "val CSV's" in ghiasi.fgbg_notes(str(tmp_path / "LOC_val_solution.csv"), "voc")


def test_the_lowpass_frame_shows_each_top1_with_the_interval_of_its_images():
    from vitcls_utils.base.uncertainty import bootstrap

    counted = pd.DataFrame({"edit": ["full", "lowpass 8"], "cutoff": [np.nan, 8.0],
                            "top1": [75.0, 25.0], "top5": [100.0, 50.0], "images": [8, 8]})
    frame = ghiasi.lowpass_frame({"A": counted, "B": counted.drop(columns="images")})
    assert frame.columns.tolist() == ["model", "edit", "cutoff", "top1", "top5", "top-1, 95% CI"]
    outcomes = np.r_[100.0, 100.0, np.zeros(6)]  # 25% of 8 images, each right or wrong
    assert frame["top-1, 95% CI"][1] == bootstrap(outcomes).bounds(1)
    assert frame["top-1, 95% CI"][3] == "–"  # no image count given


def test_the_patch_table_gives_intervals_over_images_only_where_images_are_the_units():
    # a readout made without each image's outcomes: only the accuracies get an interval
    from vitcls_utils.analysis.patch_readout import PatchReadout
    from vitcls_utils.base.uncertainty import bootstrap

    readout = PatchReadout(np.array([50.0, 100.0]), np.array([100.0, 100.0]), (1, 2),
                           model_top1=75.0, model_top5=100.0, pooled_top1=50.0,
                           pooled_top5=100.0, n_images=4)
    table = ghiasi.patch_table(readout).set_index("quantity")["top-1, 95% CI"]
    assert table["the model's output"] == bootstrap(np.r_[100.0, 100.0, 100.0, 0]).bounds(1)
    assert table["Patch Average"] == table["Patch Maximum"] == "–"


def test_patch_average_and_maximum_intervals_resample_the_images_of_the_kept_hits():
    from vitcls_utils.analysis.patch_readout import PatchReadout
    from vitcls_utils.base.uncertainty import bootstrap, bootstrap_column_statistic

    hits = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0], [1, 1, 1]], dtype=bool)
    top1 = 100 * hits.mean(0)
    readout = PatchReadout(top1, top1, (1, 3), 60.0, 60.0, 40.0, 40.0, 5, patch_hits=hits,
                           model_top1_images=np.r_[100.0, 100.0, 100.0, 0, 0],
                           pooled_top1_images=np.r_[100.0, 0, 100.0, 0, 0])
    intervals = ghiasi.readout_intervals(readout)
    # the point estimates are the table's numbers
    assert intervals["patch_average"].estimate == pytest.approx(top1.mean(), rel=1e-12)
    assert intervals["patch_maximum"].estimate == top1.max() == 80.0
    assert intervals["natural"].estimate == 60.0 and intervals["pooled_token"].estimate == 40.0
    shares = np.array([200 / 3, 200 / 3, 100 / 3, 100 / 3, 100.0])  # each image, by hand
    assert intervals["patch_average"].bounds() == bootstrap(shares).bounds()
    best = bootstrap_column_statistic(100.0 * hits, lambda m: m.max(-1))
    assert (intervals["patch_maximum"].low, intervals["patch_maximum"].high) == (best.low, best.high)
    assert intervals["patch_maximum"].low <= 80.0 <= intervals["patch_maximum"].high
    table = ghiasi.patch_table(readout).set_index("quantity")["top-1, 95% CI"]
    assert table["Patch Maximum"] == best.bounds(1) and table["Patch Average"] != "–"
