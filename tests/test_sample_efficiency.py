"""ConViT's scaled sample-efficiency sweep: the paper's protocol (first ⌊f·n⌋ per class, the
steps kept), resumable, reproducible, and the shipped results tied to the code's recipes."""
from __future__ import annotations

import json

import pytest

from vitcls_utils.training import sample_efficiency as se
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.registry import data_dir
from vitcls_utils.training.toy_models import RECIPE, RECIPES

QUICK = {"steps": 2, "warmup_steps": 1, "batch_size": 4, "train_per_class": 10}


def test_fractions_keep_the_steps_and_take_the_first_images_of_each_class():
    full = se.fraction_recipe("toy_convit", 1.0)
    assert full == {**RECIPE, **RECIPES["toy_convit"]}  # f = 1 is the shipped recipe
    for fraction, per_class in ((0.1, 80), (0.3, 240), (0.05, 40)):
        recipe = se.fraction_recipe("toy_deit", fraction)
        assert recipe["train_per_class"] == per_class and recipe["steps"] == full["steps"]
    with pytest.raises(VitclsError, match=r"\(0, 1\]"):
        se.fraction_recipe("toy_deit", 0)
    with pytest.raises(VitclsError, match="trains"):
        se.fraction_recipe("toy", 0.5)


def test_the_sweep_resumes_and_reproduces(tmp_path, monkeypatch):
    out = tmp_path / "sweep.json"
    rows = se.run(out, keys=("toy_deit",), fractions=(0.5, 1.0), changes=QUICK,
                  log=lambda *a: None)
    assert [(r["fraction"], r["train_per_class"], r["source"]) for r in rows] == [
        (0.5, 5, "trained by this sweep"), (1.0, 10, "trained by this sweep")]
    assert json.loads(out.read_text())["runs"] == rows
    # an interrupted sweep: only the missing run is trained, and it reproduces
    kept = json.loads(out.read_text())
    out.write_text(json.dumps({"runs": kept["runs"][:1]}))
    trained = []
    from vitcls_utils.training import toy_models as toy_training

    original = toy_training.train

    def counting(key, out_dir, recipe, **kwargs):
        trained.append(recipe["train_per_class"])
        return original(key, out_dir, recipe, **kwargs)

    monkeypatch.setattr(toy_training, "train", counting)
    again = se.run(out, keys=("toy_deit",), fractions=(0.5, 1.0), changes=QUICK,
                   log=lambda *a: None)
    assert trained == [10]
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in again] == strip
    assert not list(tmp_path.glob("*.tmp"))
    # a call for another fraction adds its row and keeps the others
    se.run(out, keys=("toy_deit",), fractions=(0.2,), changes=QUICK, log=lambda *a: None)
    assert [r["fraction"] for r in se.load(out)] == [0.5, 1.0, 0.2]


def test_the_shipped_sweep_matches_the_code_and_the_shipped_checkpoints():
    path = data_dir() / "toy" / "sample_efficiency.json"
    runs = se.load(path)
    records = json.loads((data_dir() / "toy" / "training.json").read_text())
    assert {(r["key"], r["fraction"]) for r in runs} >= {(k, f) for k in se.KEYS
                                                         for f in se.FRACTIONS}
    for row in runs:
        assert row["recipe"] == se.fraction_recipe(row["key"], row["fraction"], row["seed"])
        if row["fraction"] == 1.0:
            assert row["val_top1"] == records[row["key"]]["val_top1"]
    with pytest.raises(VitclsError, match="make sample-efficiency"):
        se.load(path.with_name("missing.json"))
