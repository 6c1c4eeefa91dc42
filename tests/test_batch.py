"""The papermill matrix runner: plans, titles, skips what is up to date, survives failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from test_datasets_real import make_imagenet_s
from vitcls_utils import batch
from vitcls_utils.errors import UnknownVariantError, VitclsError


def test_groups_and_plan(tmp_path):
    assert batch.expand_variants(["toy", "toy_gap"]) == ["toy", "toy_gap", "toy_random"]
    assert len(batch.expand_variants(["paper"])) == 7
    with pytest.raises(UnknownVariantError):
        batch.expand_variants(["vit_b99"])
    jobs = batch.plan(["toy", "toy_gap"], "*", tmp_path, "cpu", None, tmp_path / "runs")
    per_variant = [j for j in jobs if j.variant]
    assert len(per_variant) == 2 * (len(batch.source_notebooks()) - len(batch.COMPARISONS))
    assert jobs[-1].variant is None and jobs[-1].output.parent.name == "compare"
    assert jobs[0].parameters["dataset"] == "toy"
    with pytest.raises(VitclsError, match="--data-dir"):
        batch.plan(["vit_b32"], "tab1*", tmp_path, "cpu", None)
    with pytest.raises(VitclsError, match="no notebook"):
        batch.source_notebooks("fig99*")


def test_run_titles_hides_parameters_and_skips_when_up_to_date(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    matrix = batch.run(["toy_random"], "tab1*", device="cpu", results_dir=results,
                       runs_dir=runs, log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran"], matrix[0].message
    executed = nbformat.read(runs / "toy_random" / "tab1_identifiability_rate.ipynb", 4)
    assert executed.cells[0].source.startswith("# Table 1: Toy ViT (CLS) (random init)")
    hidden = [c for c in executed.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert any("injected-parameters" in c.metadata["tags"] for c in hidden)
    assert executed.metadata["vitcls"]["status"] == "ok"
    again = batch.run(["toy_random"], "tab1*", device="cpu", results_dir=results,
                      runs_dir=runs, log=lambda *a: None)
    assert [j.status for j in again] == ["skipped"]
    assert "0 ran, 1 skipped, 0 failed" in batch.summary(again)


def test_random_paper_variant_offline_and_real_variant_without_weights(tmp_path):
    """`vitcls run --variants vit_b16_random --notebooks 'tab1*'` works on ImageNet-S data
    without weights; vit_b32 fails with the clear message and a non-zero exit, and does not
    stop the others."""
    tree = make_imagenet_s(tmp_path / "data") / "ImageNetS919"
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    script = ("import sys; from vitcls_utils import batch; from pathlib import Path; "
              "m = batch.run(sys.argv[1:], 'tab1*', device='cpu', data_dir=%r, "
              "results_dir=Path(%r), runs_dir=Path(%r)); print(batch.summary(m)); "
              "sys.exit(1 if any(j.status == 'failed' for j in m) else 0)")
    code = script % (str(tree), str(tmp_path / "results"), str(tmp_path / "runs"))
    result = subprocess.run([sys.executable, "-c", code, "vit_b32", "vit_b16_random"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 ran, 0 skipped, 1 failed" in result.stdout
    assert "WeightsError" in result.stdout and "--weights PATH" in result.stdout
    page = tmp_path / "runs" / "vit_b16_random" / "tab1_identifiability_rate.ipynb"
    meta = json.loads(page.read_text())["metadata"]["vitcls"]
    assert meta["parameters"]["dataset"] == "imagenet-s"


def test_mask_notebooks_only_where_there_are_masks(tmp_path):
    jobs = batch.plan(["vit_b16_cifar100"], "*", tmp_path, "cpu", str(tmp_path))
    names = {j.notebook.stem for j in jobs if j.variant}
    assert names and not names & set(batch.NEEDS_MASKS)
    jobs = batch.plan(["vit_b32"], "*", tmp_path, "cpu", str(tmp_path))
    assert set(batch.NEEDS_MASKS) <= {j.notebook.stem for j in jobs}


def test_chapter2_notebooks_on_random_b32_and_a_fabricated_imagenet_s(tmp_path):
    """The three chapter-2 notebooks run on vit_b32_random with ImageNet-S masks (offline)."""
    tree = make_imagenet_s(tmp_path / "data") / "ImageNetS919"
    matrix = batch.run(["vit_b32_random"], "*_perturbation", device="cpu", data_dir=str(tree),
                       results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                       log=lambda *a: None)
    matrix += batch.run(["vit_b32_random"], "fig3a*", device="cpu", data_dir=str(tree),
                        results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                        log=lambda *a: None)
    assert [j.status for j in matrix] == ["ran"] * 3, batch.summary(matrix)
    page = nbformat.read(tmp_path / "runs" / "vit_b32_random" / "tab_context_perturbation.ipynb", 4)
    printed = "".join(o.get("text", "") for c in page.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "class-labeled" in printed and "context-labeled" in printed
