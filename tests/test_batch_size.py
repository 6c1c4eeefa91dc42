"""batch_size="auto": a fixed size on a CPU; on a GPU the largest batch whose extraction step
fits, found by halving on out-of-memory errors (simulated here)."""
from __future__ import annotations

import pytest
import torch

from vitcls_utils.stores import batch_size as batching
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.loading import load_variant


def test_cpu_gets_the_fixed_size_and_integers_pass_through(tiny_variant):
    model = load_variant("test_tiny")
    assert batching.resolve_batch_size("auto", model, []) == batching.CPU_BATCH
    assert batching.resolve_batch_size(7, model, []) == 7
    for bad in (0, "big", True, 2.5):
        with pytest.raises(VitclsError, match="positive integer or 'auto'"):
            batching.resolve_batch_size(bad, model, [])


def test_the_largest_batch_that_fits_halving_on_out_of_memory(tiny_variant, monkeypatch):
    """A device that holds at most 100 images: 1024, 512, 256, 128 fail, 64 passes, minus a
    tenth is 57."""
    from vitcls_utils.stores import site_reducer as reduce

    model = load_variant("test_tiny")
    tried = []

    def fake_call(self, images, labels, kept=None):
        tried.append(len(images))
        if len(images) > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {}

    class FakeParam:
        device = torch.device("cuda")

    monkeypatch.setattr(reduce.SiteReducer, "__call__", fake_call)
    monkeypatch.setattr(batching.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(batching.torch, "zeros", lambda *shape, **kw: torch.empty(
        shape[0] if isinstance(shape[0], int) else 0))
    monkeypatch.setattr(model, "parameters", lambda: iter([FakeParam()]))
    monkeypatch.setattr(reduce.SiteReducer, "__init__", lambda self, *a, **k: None)
    assert batching.largest_batch(model, []) == 57
    assert tried == [1024, 512, 256, 128, 64]


def test_extract_and_the_cli_take_auto(tiny_variant, image_folder, tmp_path):
    from vitcls_utils.running.cli import build_parser
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.stores.extraction import extract, open_store

    model = load_variant("test_tiny")
    store = open_store(extract(model, ImageFolderDataset(image_folder, num_classes=10),
                               tmp_path, batch_size="auto", progress=False))
    assert store.manifest["batch_size"] == batching.CPU_BATCH
    args = build_parser().parse_args(["extract", "--variant", "toy", "--data", "toy", "--out",
                                      str(tmp_path), "--batch-size", "auto"])
    assert args.batch_size == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "--variant", "toy", "--data", "toy", "--out",
                                   str(tmp_path), "--batch-size", "0"])
