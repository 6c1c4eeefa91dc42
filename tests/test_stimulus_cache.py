"""The preprocessed-stimulus cache: what a loader reads from it is, to the bit, what decoding
gives (images, statuses, token labels, stores), for every geometry kind; subsets read a
superset's entry; a changed file is noticed; an interrupted build resumes."""
from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
import torch

from conftest import TINY_PREPROCESS, make_imagenet_s, write_image
from vitcls_utils.stores import stimulus_cache
from vitcls_utils.datasets.kinds import ImageFolderDataset
from vitcls_utils.datasets.imagenet_s import ImageNetSDataset
from vitcls_utils.stores.stimulus_loader import StimulusDataset
from vitcls_utils.model.layout import TokenLayout
from vitcls_utils.datasets.preprocess import DEIT_EVAL, HF_VIT, MIIL, Preprocess

LAYOUT = TokenLayout(1, (4, 4), True)
# short side + crop (bilinear), whole-image resize (aspect ignored), bicubic + crop; small sizes
GEOMETRIES = [
    Preprocess(resize=36, crop=32, interpolation="bilinear", mean=MIIL.mean, std=MIIL.std),
    TINY_PREPROCESS,
    Preprocess(resize=(40, 40), crop=32, interpolation="bicubic", mean=DEIT_EVAL.mean,
               std=DEIT_EVAL.std),
]


def items(dataset, preprocess):
    data = StimulusDataset(dataset, preprocess, LAYOUT, 0)
    return data.cached, [data[i] for i in range(len(data))]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


@pytest.fixture
def folder(image_folder):
    (image_folder / "0" / "img2.jpg").write_bytes(b"not an image")  # unreadable: zeros
    return image_folder


@pytest.mark.parametrize("preprocess", GEOMETRIES, ids=["short-crop", "whole", "bicubic"])
def test_cached_stimuli_equal_decoded_ones(folder, tmp_path, preprocess):
    dataset = ImageFolderDataset(folder, num_classes=3)
    cached, plain = items(dataset, preprocess)
    assert cached is None  # no cache folder set: decoded
    entry = stimulus_cache.build(dataset, preprocess, tmp_path / "results", num_workers=0,
                                 batch_size=4, progress=False)
    assert entry.name.startswith("folder-" + stimulus_cache.geometry_tag(preprocess))
    fresh = stimulus_cache.use(ImageFolderDataset(folder, num_classes=3), tmp_path / "results")
    cached, read = items(fresh, preprocess)
    assert cached is not None and cached.status.count(2) == 1
    assert_same(read, plain)
    # a geometry not cached is decoded (same normalisation, other crop: no entry)
    other = Preprocess(resize=34, crop=32, interpolation="bilinear", mean=MIIL.mean,
                       std=MIIL.std)
    assert items(fresh, other)[0] is None


def test_a_subset_reads_the_entry_of_its_superset_and_workers_get_a_path(folder, tmp_path):
    full = ImageFolderDataset(folder, num_classes=3)
    stimulus_cache.build(full, HF_VIT, tmp_path, num_workers=0, progress=False)
    subset = stimulus_cache.use(ImageFolderDataset(folder, num_classes=3, n_per_class=1),
                                tmp_path)
    plain = ImageFolderDataset(folder, num_classes=3, n_per_class=1)
    data = StimulusDataset(subset, HF_VIT, LAYOUT, 0)
    assert data.cached is not None and data.cached.rows == [0, 3, 6]
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1)
    reference = torch.utils.data.DataLoader(StimulusDataset(plain, HF_VIT, LAYOUT, 0),
                                            batch_size=2)
    for a, b in zip(loader, reference, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["status"], b["status"])


def test_a_changed_file_is_decoded_and_the_entry_rebuilt(folder, tmp_path, capsys):
    dataset = stimulus_cache.use(ImageFolderDataset(folder, num_classes=3), tmp_path)
    first = stimulus_cache.build(dataset, HF_VIT, tmp_path, num_workers=0, progress=False)
    changed = folder / "1" / "img2.jpg"
    write_image(changed, seed=1234)
    os.utime(changed, ns=(1, 1))
    assert items(dataset, HF_VIT)[0] is None
    assert "older than its image files" in capsys.readouterr().err
    assert stimulus_cache.build(dataset, HF_VIT, tmp_path, num_workers=0,
                                progress=False) == first
    cached, read = items(dataset, HF_VIT)
    assert cached is not None
    assert_same(read, items(ImageFolderDataset(folder, num_classes=3), HF_VIT)[1])
    with open(first / "images.u8", "r+b") as handle:  # a damaged pixel file: not read
        handle.truncate(1000)
    assert items(dataset, HF_VIT)[0] is None and "damaged" in capsys.readouterr().err
    stimulus_cache.build(dataset, HF_VIT, tmp_path, num_workers=0, progress=False)
    assert items(dataset, HF_VIT)[0] is not None


def test_an_interrupted_build_leaves_no_entry_and_resumes(folder, tmp_path):
    dataset = ImageFolderDataset(folder, num_classes=3)

    def stop_after_first(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stimulus_cache.build(dataset, HF_VIT, tmp_path, num_workers=0, batch_size=4,
                             progress=False, _after_batch=stop_after_first)
    entry = stimulus_cache.folder_for(tmp_path) / stimulus_cache.entry_name(dataset, HF_VIT)
    assert not entry.exists() and (entry.parent / (entry.name + ".partial")).is_dir()
    assert items(dataset, HF_VIT)[0] is None  # a partial entry is never read
    seen = []
    stimulus_cache.build(dataset, HF_VIT, tmp_path, num_workers=0, batch_size=4,
                         progress=False, _after_batch=seen.append)
    assert seen == [8, 9]  # the first batch of 4 was kept
    assert sorted(p.name for p in entry.iterdir()) == ["cache.json", "images.u8"]
    assert_same(items(dataset, HF_VIT)[1],
                items(ImageFolderDataset(folder, num_classes=3), HF_VIT)[1])


def test_masks_and_token_labels_agree_on_imagenet_s(tmp_path):
    root = make_imagenet_s(tmp_path / "data")
    layout = TokenLayout(1, (2, 2), True)
    preprocess = Preprocess(resize=40, crop=32, interpolation="bilinear", mean=MIIL.mean,
                            std=MIIL.std)
    plain = ImageNetSDataset(root)
    stimulus_cache.build(plain, preprocess, tmp_path, num_workers=0, progress=False)
    cached = stimulus_cache.use(ImageNetSDataset(root), tmp_path)
    a = StimulusDataset(cached, preprocess, layout, 0)
    b = StimulusDataset(ImageNetSDataset(root), preprocess, layout, 0)
    assert a.cached is not None and b.cached is None
    rows = [a[i] for i in range(len(a))]
    assert_same(rows, [b[i] for i in range(len(b))])
    assert any((r["token_class"] == 1).any() for r in rows)  # labels are there, not all -1


def test_a_store_extracted_from_the_cache_equals_one_decoded(tiny_variant, folder, tmp_path):
    from vitcls_utils.stores.extraction import extract, open_store
    from vitcls_utils.model.loading import load_variant

    model = load_variant("test_tiny", device="cpu")
    plain = open_store(extract(model, ImageFolderDataset(folder, num_classes=10),
                               tmp_path / "a", batch_size=4, progress=False))
    stimulus_cache.build(ImageFolderDataset(folder, num_classes=10), TINY_PREPROCESS,
                         tmp_path / "b", num_workers=0, progress=False)
    dataset = ImageFolderDataset(folder, num_classes=10)
    cached = open_store(extract(model, dataset, tmp_path / "b", batch_size=4, progress=False))
    assert dataset.cache_dir == stimulus_cache.folder_for(tmp_path / "b")
    for name in ("rank", "top1", "true_logit", "pred", "status"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(plain, name))
    assert cached.manifest["checksums"] == plain.manifest["checksums"]


def test_the_cli_builds_and_refuses_what_it_cannot_cache(tiny_variant, folder, tmp_path,
                                                         capsys):
    from vitcls_utils.running.cli import main

    args = ["cache", "--variant", "test_tiny", "--data", "folder", "--data-dir", str(folder),
            "--out", str(tmp_path), "--workers", "0", "--quiet"]
    assert main(args) == 0
    assert "9 images" in capsys.readouterr().out
    assert main(args) == 0  # the second time: found, not rebuilt
    assert "already cached" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["cache", "--variant", "toy", "--data", "toy", "--data-dir", "x", "--out", "o"])
    assert exit.value.code == 2 and "invalid choice: 'toy'" in capsys.readouterr().err
    from vitcls_utils import VitclsError
    from vitcls_utils.datasets.kinds import ToyDataset

    with pytest.raises(VitclsError, match="image files"):
        stimulus_cache.require(ToyDataset(n_per_class=1))
    assert stimulus_cache.build(ToyDataset(n_per_class=1), TINY_PREPROCESS, tmp_path) is None


def test_the_runners_warm_up_skips_generated_data_and_survives_a_full_disk(tiny_variant,
                                                                           folder, tmp_path,
                                                                           monkeypatch):
    params = {"variant": "test_tiny", "dataset": "folder", "data_dir": str(folder),
              "results_dir": str(tmp_path)}
    toy = {"variant": "toy", "dataset": "toy", "results_dir": str(tmp_path)}
    said = []
    built = stimulus_cache.warm([params, dict(params), toy], log=said.append)
    assert len(built) == 1 and said == [f"stimuli cached: {built[0]}"]  # once, toy left out

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stimulus_cache, "build", full)
    said.clear()
    assert stimulus_cache.warm([{**params, "n_per_class": 1}], log=said.append) == []
    assert "No space left on device" in said[0] and "decode the images instead" in said[0]


def rewrite_keeping_size_and_mtime(path, seed):
    """Other pixels in a file of the same length, its modification time put back (as
    ``touch -r``, a backup restore or ``mv`` of a same-size file leave it)."""
    before = path.stat()
    write_image(path, seed=seed)
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def bitmaps(tmp_path):
    """2 classes x 2 BMP images (a BMP's length depends on its size only)."""
    root = tmp_path / "bitmaps"
    for label in range(2):
        for j in range(2):
            write_image(root / str(label) / f"img{j}.bmp", seed=10 * label + j)
    return root


def test_a_same_size_rewrite_with_its_mtime_restored_is_noticed(bitmaps, tmp_path, capsys,
                                                                 monkeypatch):
    """Issue 35, item 1: size and mtime are the same, the pixels are not; the stamp includes
    the ctime, which no rewrite leaves unchanged, and the content hash then decides."""
    from vitcls_utils.datasets import interface

    monkeypatch.setattr(interface, "RECENT_NS", 0)  # trust stamps at once: the stamp path
    dataset = stimulus_cache.use(ImageFolderDataset(bitmaps, num_classes=2), tmp_path)
    stimulus_cache.build(dataset, TINY_PREPROCESS, tmp_path, num_workers=0, progress=False)
    hashed, sha256 = [], interface.file_sha256
    monkeypatch.setattr(interface, "file_sha256", lambda path: hashed.append(path) or sha256(path))
    assert items(dataset, TINY_PREPROCESS)[0] is not None and not hashed  # a stat per file
    time.sleep(0.05)  # past the clock tick that stamped the build
    rewrite_keeping_size_and_mtime(bitmaps / "1" / "img0.bmp", seed=77)
    cached, read = items(dataset, TINY_PREPROCESS)
    assert cached is None and hashed == [bitmaps / "1" / "img0.bmp"]
    assert "older than its image files" in capsys.readouterr().err
    assert_same(read, items(ImageFolderDataset(bitmaps, num_classes=2), TINY_PREPROCESS)[1])
    stimulus_cache.build(dataset, TINY_PREPROCESS, tmp_path, num_workers=0, progress=False)
    cached, read = items(dataset, TINY_PREPROCESS)
    assert cached is not None
    assert_same(read, items(ImageFolderDataset(bitmaps, num_classes=2), TINY_PREPROCESS)[1])


def test_a_corrupt_pixel_row_is_decoded_instead_and_rebuilt(bitmaps, tmp_path, capsys):
    """Issue 35, item 2: bytes inverted in place in images.u8 (same size) are never read."""
    dataset = stimulus_cache.use(ImageFolderDataset(bitmaps, num_classes=2), tmp_path)
    entry = stimulus_cache.build(dataset, TINY_PREPROCESS, tmp_path, num_workers=0,
                                 progress=False)
    row = 32 * 32 * 3
    with open(entry / "images.u8", "r+b") as handle:
        handle.seek(2 * row + 100)
        flipped = bytes(255 - b for b in handle.read(50))
        handle.seek(2 * row + 100)
        handle.write(flipped)
    cached, read = items(dataset, TINY_PREPROCESS)
    assert cached is not None and not cached.intact()
    assert_same(read, items(ImageFolderDataset(bitmaps, num_classes=2), TINY_PREPROCESS)[1])
    assert "row 2 of" in capsys.readouterr().err
    assert stimulus_cache.build(dataset, TINY_PREPROCESS, tmp_path, num_workers=0,
                                progress=False) == entry  # found: rows are checked as read
    assert not items(dataset, TINY_PREPROCESS)[0].intact()
    assert stimulus_cache.build(dataset, TINY_PREPROCESS, tmp_path, num_workers=0,
                                progress=False, verify=True) == entry  # `vitcls cache`
    assert items(dataset, TINY_PREPROCESS)[0].intact()


@pytest.mark.parametrize("content", ["{}", "[]", "not json"])
def test_a_damaged_cache_json_is_said_and_rebuilt_by_the_cli(tiny_variant, bitmaps, tmp_path,
                                                             capsys, content):
    """Issue 35, item 12: `{}` or `[]` once raised KeyError/TypeError, and `vitcls cache`
    could not rebuild."""
    from vitcls_utils.running.cli import main

    args = ["cache", "--variant", "test_tiny", "--data", "folder", "--data-dir", str(bitmaps),
            "--out", str(tmp_path), "--workers", "0", "--quiet"]
    assert main(args) == 0
    entry = next(stimulus_cache.folder_for(tmp_path).glob("folder-*/cache.json"))
    entry.write_text(content)
    dataset = stimulus_cache.use(ImageFolderDataset(bitmaps, num_classes=10), tmp_path)
    assert items(dataset, TINY_PREPROCESS)[0] is None
    assert re.search("(damaged|unreadable) cache.json; decoding instead", capsys.readouterr().err)
    assert main(args) == 0
    assert "cached 4 images" in capsys.readouterr().out
    assert items(dataset, TINY_PREPROCESS)[0] is not None
