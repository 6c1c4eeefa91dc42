"""A CI-sized paper dry run: real architectures with random weights files, fabricated ImageNet-S
and CIFAR-100 data, a run file, both profiles (``make paper-dry-run`` runs every notebook)."""
from __future__ import annotations

import json

import nbformat
import pytest
from safetensors import safe_open

from vitcls_utils.running import dry_run as dryrun
from vitcls_utils.model.loading import load_variant

pytestmark = pytest.mark.slow
SUBSET = ["vit_b32", "vit_b16_gap", "vit_b16_cifar100", "vit_b16_miil"]  # GAP, CIFAR, a crop


def test_random_weights_files_load_strictly_and_refinement_drops_its_heads(tmp_path):
    path = dryrun.write_random_weights("vit_b16_refinement", tmp_path / "r.safetensors")
    with safe_open(str(path), "pt") as handle:
        assert any(k.startswith("transformerheads.") for k in handle.keys())
    model = load_variant("vit_b16_refinement", weights=path)
    assert model.vitcls_info.weights_id.startswith("file:r.safetensors:sha256=")


def test_the_subset_runs_under_both_profiles_with_its_own_weights_and_data(tmp_path):
    code = dryrun.main(["--out", str(tmp_path), "--variants", *SUBSET, "--notebooks", "tab1*",
                        "--classes", "2", "--no-controls", "--no-book"])
    assert code == 0
    runs = tmp_path / "site" / "book" / "runs"
    for key in SUBSET:
        for folder in (key, f"{key}-authors"):
            page = nbformat.read(runs / folder / "tab1_identifiability_rate.ipynb", 4)
            header = page.cells[0].source
            assert f"file:{key}.safetensors:sha256=" in header, header
            assert ("**Settings:** authors' settings" in header) == folder.endswith("-authors")
            meta = page.metadata["vitcls"]["parameters"]
            assert meta["dataset"] == ("cifar100" if key == "vit_b16_cifar100" else "imagenet-s")
    run_file = (tmp_path / "paper-dry-run.yml").read_text()
    assert "cifar100:" in run_file and "imagenet-s:" in run_file
    stores = sorted(p.parent.parent.name for p in (tmp_path / "results").glob("*/*/manifest.json"))
    assert "vit_b16_random" in stores  # MIIL's control under the paper profile (catalogue §2)
    assert "vit_b16_miil_random" in stores  # and its own under the corrected one
    manifest = json.loads(next((tmp_path / "results" / "vit_b16_cifar100").glob(
        "*/manifest.json")).read_text())
    assert manifest["config"]["dataset"]["name"].startswith("cifar100")
