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


def test_threads_checking_one_new_out_folder_at_once_all_pass(tmp_path):
    # the write probe is a file of its own per call: with one name per process, a thread
    # removed another's probe and a shard failed with "No such file or directory"
    for attempt in range(10):
        out, start, errors = tmp_path / f"new{attempt}", threading.Barrier(6), []

        def check():
            start.wait()
            try:
                store.check_out_folder(out)
            except Exception as error:
                errors.append(error)

        workers = [threading.Thread(target=check) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors and sorted(p.name for p in out.iterdir()) == []


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


# ----------------------------------------------------------------------------------------------
# A full disk (issue 35, item 8)
# ----------------------------------------------------------------------------------------------
FAULT_SCENARIO = r'''
"""Fill a small filesystem before and during a cache build, an extraction and a page write:
each is one clean line of error, nothing left is read as whole, and after freeing the space
the resumed result equals an uninterrupted one. Run as: METHOD SMALL SCRATCH TESTS."""
import errno, json, os, resource, signal, sys
from pathlib import Path

method, small, scratch, tests = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
sys.path.insert(0, tests)
os.environ["TQDM_DISABLE"] = "1"
from conftest import TINY, TINY_PREPROCESS, write_image
import nbformat, numpy as np, papermill
from vitcls_utils.base.errors import IncompleteStoreError, VitclsError, WriteError
from vitcls_utils.datasets.kinds import ImageFolderDataset
from vitcls_utils.model import registry
from vitcls_utils.model.loading import load_variant
from vitcls_utils.running import runner
from vitcls_utils.stores import stimulus_cache
from vitcls_utils.stores.extraction import extract
from vitcls_utils.stores.reader import open_store

BALLAST = small / "ballast"


def fill(*_):
    """No room left: a ballast file to the last block (tmpfs), or no byte past the files'
    start (a write shim: RLIMIT_FSIZE 0, SIGXFSZ ignored so the write fails with EFBIG)."""
    if method == "tmpfs":
        with open(BALLAST, "wb", buffering=0) as handle:
            for size in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        handle.write(b"\0" * size)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def free():
    if method == "tmpfs":
        BALLAST.unlink()
    else:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def refused(action, *args, **kwargs):
    """``action`` fails with one line naming the disk, and the space is freed again."""
    try:
        action(*args, **kwargs)
    except WriteError as error:
        message = str(error)
        assert "\n" not in message and ("No space left" in message or "too large" in message), message
    else:
        raise AssertionError(f"{action.__name__} wrote to a full disk")
    finally:
        free()


def after(count):
    """A hook that fills the disk once ``count`` images are written."""
    return lambda done: fill() if done >= count else None


images = scratch / "images"
for label in range(3):
    for j in range(3):
        write_image(images / str(label) / f"img{j}.png", seed=10 * label + j)
registry.register(registry.Variant(
    key="test_tiny", label="tiny", arch="vit_tiny_patch16_224", tag=None,
    preprocess=TINY_PREPROCESS, num_classes=10, pooling="token", n_tokens=17, dataset="folder",
    paper_key="-", weights="random", random=True, model_kwargs=tuple(TINY.items())))
model = load_variant("test_tiny")

# the stimulus cache: refused when it cannot reserve its pixels, and when full half-way
whole = stimulus_cache.build(ImageFolderDataset(images, 10), TINY_PREPROCESS, scratch / "r",
                             num_workers=0, batch_size=4, progress=False)
fill()
refused(stimulus_cache.build, ImageFolderDataset(images, 10), TINY_PREPROCESS, small / "r",
        num_workers=0, batch_size=4, progress=False)
refused(stimulus_cache.build, ImageFolderDataset(images, 10), TINY_PREPROCESS, small / "r",
        num_workers=0, batch_size=4, progress=False, _after_batch=after(4))
dataset = stimulus_cache.use(ImageFolderDataset(images, 10), small / "r")
assert stimulus_cache.lookup(dataset, TINY_PREPROCESS) is None  # a part is never read
seen = []
entry = stimulus_cache.build(dataset, TINY_PREPROCESS, small / "r", num_workers=0,
                             batch_size=4, progress=False, _after_batch=seen.append)
assert seen == [8, 9], seen  # resumed after the first batch
assert (entry / "images.u8").read_bytes() == (whole / "images.u8").read_bytes()
assert json.loads((entry / "cache.json").read_text())["rows"] == \
    json.loads((whole / "cache.json").read_text())["rows"]
fill()  # the runner's warm-up: the run goes on, decoding instead
said = []
assert stimulus_cache.warm([{"variant": "test_tiny", "dataset": "folder", "data_dir": str(images),
                             "results_dir": str(small / "w")}], log=said.append) == []
free()
assert "not cached" in said[0] and "decode the images instead" in said[0], said

# the store: refused before a row is computed, and when full after the first batch
clean = open_store(extract(model, ImageFolderDataset(images, 10), scratch / "s", batch_size=4,
                           progress=False))
fill()
refused(extract, model, ImageFolderDataset(images, 10), small / "s", batch_size=4,
        progress=False)
refused(extract, model, ImageFolderDataset(images, 10), small / "s", batch_size=4,
        progress=False, _after_write=after(4))
path = next((small / "s" / "test_tiny").iterdir())
try:
    open_store(path)
except IncompleteStoreError:
    pass  # what a cut run leaves says so, and is not read
resumed = open_store(extract(model, ImageFolderDataset(images, 10), small / "s", batch_size=4,
                             progress=False))
for name in ("rank", "top1", "true_logit", "pred", "labels", "status"):
    np.testing.assert_array_equal(getattr(resumed, name), getattr(clean, name))
assert resumed.manifest["checksums"] == clean.manifest["checksums"]


# a page: papermill's write refused, the page not written, then written whole
def executed(source, output, **kwargs):
    nbformat.write(nbformat.read(source, as_version=4), output)


papermill.execute_notebook = executed
notebook = runner.NOTEBOOKS / "tab1_identifiability_rate.ipynb"
parameters = {"variant": "toy_random", "dataset": "toy", "results_dir": str(small / "s")}
reference = runner.execute(runner.Job(notebook, scratch / "runs" / notebook.name,
                                      dict(parameters), "toy_random"))
assert reference.status == "ran", reference.message
page = small / "runs" / notebook.name
fill()
failed = runner.execute(runner.Job(notebook, page, dict(parameters), "toy_random"))
free()
assert failed.status == "failed" and not page.exists(), failed.message
assert "No space left" in failed.message or "too large" in failed.message, failed.message
again = runner.execute(runner.Job(notebook, page, dict(parameters), "toy_random"))
assert again.status == "ran" and page.read_text() == reference.output.read_text()
print("every write refused cleanly and resumed to the uninterrupted result")
'''


def small_filesystem(folder) -> str:
    """A 2 MiB tmpfs at ``folder`` where this machine lets the tests mount one (root, outside
    most CI containers): "tmpfs"; else "shim", a size-limited write shim (RLIMIT_FSIZE)."""
    import os
    import subprocess

    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode == 0:
            return "tmpfs"
    return "shim"


def test_a_full_disk_during_cache_store_and_page_writes_is_clean_and_resumable(tmp_path,
                                                                              capsys):
    """Issue 35, item 8: `vitcls cache` and the runner's warm-up died with SIGBUS on a full
    disk (a memory-mapped write), and extraction with an OSError traceback. Fills a small
    filesystem before and during each write, in a process of its own; never skipped: without
    tmpfs, the write shim stands in, and the test says which it used."""
    import subprocess
    import sys
    from pathlib import Path

    small, scratch = tmp_path / "small", tmp_path / "scratch"
    small.mkdir()
    method = small_filesystem(small)
    try:
        result = subprocess.run([sys.executable, "-c", FAULT_SCENARIO, method, str(small),
                                 str(scratch), str(Path(__file__).parent)],
                                capture_output=True, text=True, timeout=300)
    finally:
        if method == "tmpfs":
            subprocess.run(["umount", "-l", str(small)], check=True)
    with capsys.disabled():
        print(f"\n[fault injection: {method}]", end=" ")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed to the uninterrupted result" in result.stdout


def test_a_store_that_cannot_be_reused_is_named_with_the_settings_that_differ(tmp_path):
    """Issue 35: when a reuse is refused, one line says why and what runs instead."""
    from vitcls_utils.stores.reader import why_not_reused

    config = {"variant": "toy", "weights_id": "sha256:aaa", "kinds": ["resid_post"],
              "dataset": {"name": "toy", "fingerprint": "f1", "content": "c1", "n_images": 24}}
    assert why_not_reused(tmp_path, config) is None  # nothing of the variant there
    for name, made in (("toy-1", {**config, "weights_id": "sha256:bbb",
                                  "dataset": {**config["dataset"], "content": "c2"}}),
                       ("toy-2", {**config, "kinds": ["resid_post", "attn_out"]}),
                       ("toy-3", {**config, "weights_id": "sha256:ccc"})):
        folder = tmp_path / "toy" / name
        folder.mkdir(parents=True)
        status = "complete" if name != "toy-3" else "extracting"  # incomplete: not a candidate
        (folder / "manifest.json").write_text(json.dumps({
            "status": status, "config": made, "sites": ["blocks.0.hook_resid_post"],
            "layout": {"n_tokens": 5}}))
    assert why_not_reused(tmp_path, config) == "the toy store on toy differs in site kinds"
    (tmp_path / "toy" / "toy-2" / "manifest.json").unlink()
    assert why_not_reused(tmp_path, config) == ("the toy store on toy differs in image "
                                                "contents, weights")


def test_store_for_says_why_it_extracts_beside_an_existing_store(tmp_path, capfd):
    from vitcls_utils.stores.extraction import store_for

    store_for("toy_random", "toy", results_dir=tmp_path, n_per_class=1, seed=0, progress=False)
    capfd.readouterr()
    store_for("toy_random", "toy", results_dir=tmp_path, n_per_class=1, seed=1, progress=False)
    assert ("the toy_random store on toy differs in weights; extracting a new store"
            in capfd.readouterr().err)
