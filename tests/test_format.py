"""The store cannot be corrupted: a failure at any write step is resumed to the arrays of an
uninterrupted run, and any damaged file (truncated, garbage header, one flipped byte, a garbage
manifest or progress file) is reported by name, never read or resumed."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from vitcls_utils import DamagedStoreError, IncompleteStoreError, StoreError
from vitcls_utils.stores import format as store
from vitcls_utils.stores import extraction as extract_module
from vitcls_utils.datasets.kinds import ImageFolderDataset
from vitcls_utils.stores.extraction import extract
from vitcls_utils.stores.reader import open_store
from vitcls_utils.stores.format import expected_files
from vitcls_utils.model.loading import load_variant

ARRAYS = ("rank", "top1", "true_logit", "pred", "labels", "status")


class Killed(Exception):
    """Stands for the process dying at one write step."""


@pytest.fixture
def setup(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny", seed=3)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    clean = extract(model, dataset, tmp_path / "clean", batch_size=5)
    return model, dataset, clean


def fail_at(mp: pytest.MonkeyPatch, step: int) -> list:
    """Make the ``step``-th write of the store (allocation, row write, sync, JSON file) raise."""
    count = [0]

    def counted(function):
        def wrapper(*args, **kwargs):
            count[0] += 1
            if count[0] == step:
                raise Killed(step)
            return function(*args, **kwargs)
        return wrapper

    mp.setattr(extract_module, "allocate", counted(store.allocate))
    mp.setattr(extract_module, "write_json_atomic", counted(store.write_json_atomic))
    mp.setattr(store, "write_json_atomic", counted(store.write_json_atomic))  # finish_store
    mp.setattr(store.RowWriter, "write", counted(store.RowWriter.write))
    mp.setattr(store.RowWriter, "sync", counted(store.RowWriter.sync))
    return count


def test_a_failure_at_any_write_step_resumes_to_the_clean_arrays(setup, tmp_path):
    model, dataset, clean = setup
    expected = open_store(clean)
    step, failed_at = 0, []
    while True:
        step += 1
        out = tmp_path / f"step{step}"
        with pytest.MonkeyPatch.context() as mp:
            fail_at(mp, step)
            try:
                extract(model, dataset, out, batch_size=5)
            except Killed:
                failed_at.append(step)
            else:
                break  # no write step left to fail at
        path = extract(model, dataset, out, batch_size=5)  # the rerun
        resumed = open_store(path)
        assert resumed.manifest["status"] == "complete"
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(resumed, name), getattr(expected, name),
                                          err_msg=f"{name} after a failure at step {step}")
    # allocations, the first JSON files, rows and syncs of 2 batches, progress, the finish
    assert len(failed_at) >= 20, failed_at


def test_a_kill_after_the_last_row_is_finished_by_the_rerun(setup, tmp_path):
    model, dataset, _ = setup
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "write_json_atomic", lambda *a, **k: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            extract(model, dataset, tmp_path / "o", batch_size=5)
    path = next((tmp_path / "o" / "test_tiny").iterdir())
    assert json.loads((path / "progress.json").read_text())["done"] == len(dataset)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(path)
    assert open_store(extract(model, dataset, tmp_path / "o")).manifest["status"] == "complete"


def damage(file, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how == "truncated":
        file.write_bytes(data[:-1])
    elif how == "flipped":
        data[-1] ^= 0x01
        file.write_bytes(data)
    elif how == "garbage":
        file.write_bytes(b"not an array at all" * 3)
    elif how == "header only":
        file.write_bytes(data[:128])


def store_files(path):
    manifest = json.loads((path / "manifest.json").read_text())
    return sorted(expected_files(manifest))


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "header only"])
def test_any_damaged_file_of_a_complete_store_is_named(setup, tmp_path, how):
    _, _, clean = setup
    names = store_files(clean) + ["items.tsv"]
    assert "rank.npy" in names and "status.npy" in names
    for name in names:
        if name == "items.tsv" and how != "flipped":
            continue  # a text file: only its checksum can tell
        copy = tmp_path / how / name / clean.name
        shutil.copytree(clean, copy)
        damage(copy / name, how)
        with pytest.raises(DamagedStoreError, match=name.replace(".", r"\.")) as error:
            open_store(copy)
        assert "delete" in str(error.value)


@pytest.mark.parametrize("how", ["truncated", "garbage", "header only"])
def test_an_interrupted_store_with_a_damaged_file_is_not_resumed(setup, tmp_path, how):
    model, dataset, _ = setup

    def interrupt(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, dataset, tmp_path / "o", batch_size=5, _after_write=interrupt)
    path = next((tmp_path / "o" / "test_tiny").iterdir())
    damage(path / "rank.npy", how)
    with pytest.raises(DamagedStoreError, match=r"rank\.npy.*--force"):
        extract(model, dataset, tmp_path / "o", batch_size=5)
    fresh = extract(model, dataset, tmp_path / "o", batch_size=5, force=True)
    assert open_store(fresh).manifest["status"] == "complete"


@pytest.mark.parametrize("name, content", [
    ("manifest.json", "{not json"), ("manifest.json", "[1, 2]"), ("manifest.json", "{}"),
    ("progress.json", "garbage"), ("progress.json", '{"done": -3}'),
    ("progress.json", '{"done": 1000}'), ("progress.json", '{"done": "4"}')])
def test_a_garbage_manifest_or_progress_file_is_named(setup, tmp_path, name, content):
    model, dataset, clean = setup
    copy = tmp_path / "copy" / clean.parent.name / clean.name
    shutil.copytree(clean, copy)
    (copy / name).write_text(content)
    with pytest.raises(DamagedStoreError, match=name.replace(".", r"\.")):
        open_store(copy)
    with pytest.raises(StoreError, match=name.replace(".", r"\.")):  # nor resumed
        extract(model, dataset, tmp_path / "copy", batch_size=5)


def test_force_waits_for_the_writer_holding_the_store(setup, tmp_path, capfd):
    """A forced rerun started while another run holds the store waits for it (and says so),
    then rewrites a complete store; it never writes over rows being written."""
    model, dataset, clean = setup
    path = clean
    holding, release = threading.Event(), threading.Event()

    def hold():
        with store.store_lock(path):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    result = []
    forced = threading.Thread(target=lambda: result.append(
        extract(model, dataset, tmp_path / "clean", batch_size=5, force=True)))
    forced.start()
    time.sleep(0.5)
    assert forced.is_alive(), "the forced run did not wait for the lock"
    release.set()
    holder.join()
    forced.join()
    assert "is being written by pid" in capfd.readouterr().err
    assert open_store(result[0]).manifest["status"] == "complete"


def test_an_out_folder_that_is_a_file_is_refused(setup, tmp_path):
    model, dataset, _ = setup
    (tmp_path / "afile").write_text("")
    with pytest.raises(StoreError, match="is a file; it must be a folder"):
        extract(model, dataset, tmp_path / "afile")


def test_stores_are_chosen_on_their_manifests_and_only_the_chosen_are_opened(setup, tmp_path):
    from vitcls_utils.model.perturbations import AttentionPerturbation
    from vitcls_utils.stores.reader import find_stores, main_stores

    model, dataset, clean = setup
    out = clean.parent.parent
    time.sleep(1.1)  # a later "completed" stamp (seconds)
    newer = extract(model, dataset, out, batch_size=5, kinds=["resid_post"])
    assert [r.path for r in find_stores(out)] == [newer, clean]  # newest first
    subset = ImageFolderDataset(dataset.root, num_classes=10, n_per_class=1)
    main = extract(model, dataset, out, batch_size=5)  # chapter 1's kinds
    perturbed = extract(model, dataset, out, batch_size=5, kinds=["resid_post"],
                        perturbation=AttentionPerturbation("no_cls"))
    assert perturbed != main
    time.sleep(1.1)
    extract(model, subset, out, batch_size=5)  # the newest, on a subset: not the main one
    assert main_stores(out)["test_tiny"].path == main
    damage(newer / "rank.npy", "flipped")  # not chapter 1's kinds: never chosen below
    assert main_stores(out)["test_tiny"].path == main
    with pytest.raises(DamagedStoreError, match=r"rank\.npy"):
        find_stores(out)  # opens every store it returns, so the damage is reported
