"""Chapter 8's tables: wide lens table, where-it-happens, intervals written out."""
from __future__ import annotations

import numpy as np
import pandas as pd

from vitcls_utils.base.uncertainty import Interval, bootstrap, paired_difference
from vitcls_utils.report import readout_tables as rt


def _table():
    rng = np.random.default_rng(0)
    rows = [{"kind": k, "block": b, "readout": r, "kl": 0.1 * b, "agreement": b / 3,
             "top1": 0.5, "kl_images": rng.random(6), "agreement_images": rng.random(6),
             "top1_images": np.r_[rng.random(5), np.nan]}
            for k in ("cls", "image") for r in ("plain", "tuned", "probe") for b in (1, 2, 3)]
    return pd.DataFrame(rows)


def test_lens_intervals_are_the_bootstrap_of_each_cells_images():
    table = _table()
    wide = rt.lens_wide_intervals(table, "agreement", seed=3)
    cell = table.query("kind == 'image' and readout == 'tuned' and block == 2").iloc[0]
    assert wide.loc[2, ("image tokens", "tuned lens")] == bootstrap(
        cell.agreement_images, seed=3).format(3)
    assert rt.lens_wide_intervals(table, "top1").iloc[0, 0].endswith("(1 excluded)")
    assert ("[CLS]", "linear probe") not in rt.lens_wide_intervals(table, "kl").columns
    diff = rt.kl_differences(table)["cls"]
    blocks = table[(table.kind == "cls")].sort_values("block")
    tuned = np.mean([v for v in blocks[blocks.readout == "tuned"].kl_images], axis=0)
    plain = np.mean([v for v in blocks[blocks.readout == "plain"].kl_images], axis=0)
    assert diff == paired_difference(tuned - plain, np.zeros(6))


def test_match_interval_and_sentence():
    matches = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1]], dtype=float)
    shown = rt.match_display(matches, 0.25)
    assert list(shown["mean"]) == [0.75, 0.5, 1.0] and list(shown.n) == [4, 4, 4]
    assert shown["95% CI"][2] == "[1.000, 1.000]" and (shown.chance == 0.25).all()
    text = rt.match_sentence(matches, 0.25)
    assert bootstrap(matches.mean(1)).format(3) in text and "excludes zero" in text
    assert "holds zero" in rt.match_sentence(np.eye(4)[:, :2], 0.25)


def test_lens_wide_and_kl_without_probe():
    wide = rt.lens_wide(_table())
    assert wide.shape == (3, 6) and wide.loc[3, ("[CLS]", "tuned lens")] == 1.0
    assert ("[CLS]", "linear probe") not in rt.lens_wide(_table(), "kl").columns


def test_where_it_happens_and_intervals():
    first = pd.DataFrame([{"kind": "cls", "readout": "plain", "first_block": 2.0},
                          {"kind": "image", "readout": "probe", "first_block": float("nan")}])
    frame = rt.where_it_happens(first, {"top-1": 3, "the logit": None}, 0.9)
    assert list(frame.block) == ["2", "–", "3", "–"] and "≥ 90%" in frame.what[0]
    one = Interval(0.25, 0.1, 0.4, 10)
    table = pd.DataFrame({"heads": ["top 1"], "mode": ["mean"], "members": [[(0, 1)]],
                          "logit_drop": [one], "top1_drop": [one]})
    shown = rt.ablation_display(table).iloc[0]
    assert shown["which (block.head)"] == "1.1"
    assert shown["top-1 drop [95% CI]"] == "25.0% [10.0%, 40.0%]"
    curve = rt.curve_display(pd.DataFrame({"block": [1], "logit_drop": [one],
                                           "top1_drop": [one]}))
    assert curve.iloc[0, 1] == "0.25 [0.10, 0.40]"


def test_lens_sentence_names_only_the_kinds_there_are():
    column = "identifiable image tokens, last block (%)"
    t1 = pd.DataFrame({column: [96.61, 96.24]}, index=["plain readout", "tuned lens"])
    text = rt.lens_sentence({"image": {"plain": 1.1594, "tuned": 0.616}}, t1)
    assert "from 1.159 to 0.616 nats for image tokens" in text and "[CLS]" not in text
    assert "96.6% under the plain readout and 96.2% under the tuned lens" in text
    zero = Interval(0.0, 0.0, 0.0, 24, method="exact")
    text = rt.lens_sentence({"image": {"plain": 1.1594, "tuned": 0.616}}, t1,
                            {"image": Interval(-0.5, -0.6, -0.4, 24)}, zero)
    assert "tuned − plain -0.500 [-0.600, -0.400], paired over 24 images; its 95% CI " \
           "excludes zero" in text
    assert "0.0 [0.0, 0.0] points, paired over 24 images; its 95% CI holds zero" in text
