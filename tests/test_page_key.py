"""A page's key: a page is skipped only while what it was made from is unchanged, and each of
the things it depends on changes the key (issue 35, item 4)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import write_image
from vitcls_utils.running import page_key, runner

NOTEBOOK = runner.NOTEBOOKS / "tab1_identifiability_rate.ipynb"


def page(tmp_path, parameters, variant="test_tiny"):
    """A job whose page was made with the key of this moment (as execute writes it)."""
    job = runner.Job(NOTEBOOK, tmp_path / "runs" / "page.ipynb",
                     {"results_dir": str(tmp_path / "results"), **parameters}, variant)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    job.output.write_text(json.dumps({"metadata": {"vitcls": {
        "key": job.key, "key_parts": job.key_parts, "status": "ok"}}}))
    assert runner.up_to_date(job)
    return job


@pytest.fixture
def bitmaps(tmp_path):
    root = tmp_path / "bitmaps"
    for label in range(2):
        write_image(root / str(label) / "a.bmp", seed=label)
    return root


def test_an_image_added_or_rewritten_in_place_makes_the_page_stale(tiny_variant, bitmaps,
                                                                   tmp_path):
    job = page(tmp_path, {"variant": "test_tiny", "dataset": "folder",
                          "data_dir": str(bitmaps)})
    write_image(bitmaps / "1" / "b.bmp", seed=5)
    assert not runner.up_to_date(job)
    job = page(tmp_path, job.parameters)
    target = bitmaps / "0" / "a.bmp"
    before = target.stat()
    write_image(target, seed=6)  # same length, mtime put back
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and not runner.up_to_date(job)


def test_weights_replaced_at_the_same_path_make_the_page_stale(tiny_variant, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one checkpoint")
    job = page(tmp_path, {"variant": "test_tiny", "dataset": "toy", "weights": str(weights)})
    weights.write_bytes(b"another one!!!")
    assert not runner.up_to_date(job)
    assert page_key.weights_digest({}, "toy", tmp_path)  # shipped weights are covered too


def test_a_change_of_the_package_code_makes_the_page_stale(tmp_path, monkeypatch):
    package = tmp_path / "package"
    shutil.copytree(page_key.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(page_key, "PACKAGE", package)
    job = page(tmp_path, {"variant": "toy_random", "dataset": "toy"}, "toy_random")
    module = package / "analysis" / "identifiability.py"
    module.write_text(module.read_text() + "\n# a change\n")
    assert not runner.up_to_date(job)
    assert runner.why_stale(job) == "changed: package source"  # the line the run prints


def test_a_page_that_runs_again_says_which_input_changed(tmp_path):
    job = page(tmp_path, {"variant": "toy_random", "dataset": "toy", "seed": 0}, "toy_random")
    assert runner.why_stale(job) is None
    job.parameters["seed"] = 1
    assert runner.why_stale(job) == "changed: parameters"
    meta = json.loads(job.output.read_text())
    del meta["metadata"]["vitcls"]["key_parts"]  # a page written before the parts were kept
    job.output.write_text(json.dumps(meta))
    assert runner.why_stale(job) == "changed: an older page format"
    meta["metadata"]["vitcls"]["status"] = "failed"
    job.output.write_text(json.dumps(meta))
    assert runner.why_stale(job) == "its last run failed"
    job.output.unlink()
    assert runner.why_stale(job) == "no page yet"
    # the key is one hash of the parts: equal parts, equal keys, and any part moves it
    parts = job.key_parts
    assert page_key.combined(parts) == job.key == page_key.page_key(
        job.notebook, job.parameters, job.variant)
    assert page_key.combined({**parts, "weights": "x"}) != job.key


def test_a_comparison_page_is_stale_when_a_store_it_reads_is_made_again(tmp_path):
    manifest = tmp_path / "results" / "toy" / "toy-abc" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"completed": "monday"}')
    job = page(tmp_path, {}, variant=None)
    manifest.write_text('{"completed": "tuesday"}')
    assert not runner.up_to_date(job)
