"""Chapter 8's tables: wide lens table, where-it-happens, intervals written out."""
from __future__ import annotations

import pandas as pd

from vitcls_utils.base.uncertainty import Interval
from vitcls_utils.report import readout_tables as rt


def _table():
    rows = [{"kind": k, "block": b, "readout": r, "kl": 0.1 * b, "agreement": b / 3,
             "top1": 0.5} for k in ("cls", "image") for r in ("plain", "tuned", "probe")
            for b in (1, 2, 3)]
    return pd.DataFrame(rows)


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
