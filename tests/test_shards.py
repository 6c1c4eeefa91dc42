"""Shards of one store: n processes (threads here, and processes through the CLI) write a
store identical to one process's, resume after an interrupt, and refuse what would mix."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from vitcls_utils import StoreError, VitclsError
from vitcls_utils.datasets.kinds import ImageFolderDataset
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.stores.shards import parse_shard, shard_rows
from vitcls_utils.model.loading import load_variant

ARRAYS = ("rank", "top1", "true_logit", "pred", "labels", "status")


def same_store(a, b):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.manifest["checksums"] == b.manifest["checksums"]


def test_rows_are_dealt_in_whole_batches_and_cover_the_store():
    for n_images, unit, count in ((9, 2, 3), (10, 4, 2), (3, 2, 5), (16, 16, 2)):
        rows = [shard_rows(n_images, unit, (i, count)) for i in range(count)]
        assert rows[0][0] == 0 and rows[-1][1] == n_images
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        assert all(start % unit == 0 for start, _ in rows)
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(VitclsError, match="i/n|0 <= i < n"):
            parse_shard(bad)


def test_shards_side_by_side_write_the_store_of_one_process(tiny_variant, image_folder,
                                                            tmp_path):
    model = load_variant("test_tiny", seed=3)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    alone = open_store(extract(model, dataset, tmp_path / "alone", batch_size=2, progress=False))
    paths, errors = [], []
    models = [load_variant("test_tiny", seed=3) for _ in range(3)]  # one per "process"
    start = threading.Barrier(3)  # all three create the (new) results folder at once

    def run(i):
        start.wait()
        try:
            paths.append(extract(models[i], dataset, tmp_path / "shared", batch_size=2,
                                 progress=False, shard=(i, 3)))
        except Exception as error:  # a thread's error fails the test, not just a warning
            errors.append(error)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and len(paths) == 3 and len(set(paths)) == 1
    shared = open_store(paths[0])
    assert shared.manifest["status"] == "complete" and shared.manifest["shards"] == 3
    same_store(shared, alone)
    # a complete store is complete for every later call, sharded or not
    assert extract(model, dataset, tmp_path / "shared", batch_size=2, shard=(1, 2)) == paths[0]
    assert extract(model, dataset, tmp_path / "shared", batch_size=2) == paths[0]


def test_an_interrupted_shard_resumes_and_the_store_waits_for_it(tiny_variant, image_folder,
                                                                  tmp_path):
    model = load_variant("test_tiny", seed=3)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    alone = open_store(extract(model, dataset, tmp_path / "alone", batch_size=2, progress=False))
    out = tmp_path / "sharded"

    def interrupt(done):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, dataset, out, batch_size=2, shard=(0, 2), _after_write=interrupt)
    path = extract(model, dataset, out, batch_size=2, shard=(1, 2), progress=False)
    assert json.loads((path / "manifest.json").read_text())["status"] == "running"
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)
    with pytest.raises(StoreError, match="started as 2 shards"):
        extract(model, dataset, out, batch_size=2)
    with pytest.raises(StoreError, match="not 3 shards"):
        extract(model, dataset, out, batch_size=2, shard=(0, 3))
    with pytest.raises(VitclsError, match="delete the store once"):
        extract(model, dataset, out, batch_size=2, shard=(0, 2), force=True)
    same_store(open_store(extract(model, dataset, out, batch_size=2, shard=(0, 2),
                                  progress=False)), alone)


def test_the_cli_runs_shards_as_separate_processes(image_folder, tmp_path):
    """Two `vitcls extract --shard` processes at once, then the store equals a serial run."""
    command = [sys.executable, "-m", "vitcls_utils.running.cli", "extract", "--variant", "toy_random",
               "--data", "toy", "--n-per-class", "1", "--batch-size", "4", "--quiet"]
    serial = subprocess.run(command + ["--out", str(tmp_path / "serial")], capture_output=True,
                            text=True, check=True)
    assert "store:" in serial.stdout
    runs = [subprocess.Popen(command + ["--out", str(tmp_path / "sharded"), "--shard", f"{i}/2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]
    outputs = [run.communicate() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert any("the store is complete" in out for out, _ in outputs)
    stores = [next((tmp_path / name / "toy_random").iterdir()) for name in ("serial", "sharded")]
    same_store(*(open_store(s) for s in stores))
    bad = subprocess.run(command + ["--out", str(tmp_path / "x"), "--shard", "2/2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "0 <= i < n" in bad.stderr and "Traceback" not in bad.stderr


def folder_of(root, seed):
    """2 classes x 2 images, the same names in every folder, pixels chosen by ``seed``."""
    from conftest import write_image

    for label in range(2):
        for j in range(2):
            write_image(root / str(label) / f"img{j}.png", seed=seed + 10 * label + j)
    return root


@pytest.mark.parametrize("other", ["images", "n_per_class", "weights"])
def test_shards_run_with_other_settings_name_the_disagreement(tiny_variant, tmp_path, other):
    """Issue 35, items 3 and 18: shard 1/2 on other images (same names), another
    --n-per-class or other weights once filled a store of its own, both "waiting for their
    other shards" forever (or, for other images, one "complete" store of mixed rows)."""
    a = ImageFolderDataset(folder_of(tmp_path / "a", 0), num_classes=10)
    b = {"images": ImageFolderDataset(folder_of(tmp_path / "b", 50), num_classes=10),
         "n_per_class": ImageFolderDataset(tmp_path / "a", num_classes=10, n_per_class=1),
         "weights": a}[other]
    differs = {"images": "dataset.content", "n_per_class": "dataset.n_images",
               "weights": "weights_id"}[other]
    model = load_variant("test_tiny", seed=3)
    first = extract(model, a, tmp_path / "out", batch_size=2, progress=False, shard=(0, 2))
    with pytest.raises(StoreError) as caught:
        extract(load_variant("test_tiny", seed=4 if other == "weights" else 3), b,
                tmp_path / "out", batch_size=1 if other == "n_per_class" else 2,
                progress=False, shard=(1, 2))
    message = str(caught.value)
    assert "waits for shard(s) 0 of 2" in message and "shard 0/2 was run with other " \
        "settings" in message and first.name in message and differs in message
    assert "\n" not in message
    done = extract(model, a, tmp_path / "out", batch_size=2, progress=False, shard=(1, 2))
    assert done == first
    same_store(open_store(done), open_store(extract(model, a, tmp_path / "alone",
                                                    batch_size=2, progress=False)))


def test_the_cli_names_the_shard_a_store_waits_for(tiny_variant, tmp_path, capsys):
    from vitcls_utils.running.cli import main

    data = folder_of(tmp_path / "a", 0)
    assert main(["extract", "--variant", "test_tiny", "--data", "folder", "--data-dir",
                 str(data), "--out", str(tmp_path / "out"), "--batch-size", "2", "--quiet",
                 "--shard", "1/2"]) == 0
    assert "waiting for shard(s) 0/2 (run them with the same settings)" in capsys.readouterr().out
