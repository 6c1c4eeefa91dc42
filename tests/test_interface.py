"""The stimuli's content identity: it changes with what a file holds (not only its size and
mtime), it is absent for generated stimuli (so their stores keep their keys), and a file is
hashed again only when its stamp changed, in this process or, through the index beside the
stimulus caches, a later one."""
from __future__ import annotations

import os

from conftest import write_image
from vitcls_utils.datasets import interface
from vitcls_utils.datasets.cifar import Cifar100Dataset
from vitcls_utils.datasets.kinds import ImageFolderDataset, ToyDataset
from vitcls_utils.running.dry_run import fabricate_cifar100


def test_generated_stimuli_have_no_content_identity():
    assert ToyDataset(n_per_class=1).content_id() is None


def test_the_identity_follows_the_bytes_of_images_and_of_a_cifar_pickle(tmp_path):
    for j in range(2):
        write_image(tmp_path / "images" / "0" / f"{j}.bmp", seed=j)
    first = ImageFolderDataset(tmp_path / "images", num_classes=1).content_id()
    assert ImageFolderDataset(tmp_path / "images", num_classes=1).content_id() == first
    target = tmp_path / "images" / "0" / "1.bmp"
    stamp = target.stat()
    write_image(target, seed=9)  # the same length, its mtime put back
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert ImageFolderDataset(tmp_path / "images", num_classes=1).content_id() != first
    cifar = Cifar100Dataset(fabricate_cifar100(tmp_path / "cifar", seed=0)).content_id()
    other = Cifar100Dataset(fabricate_cifar100(tmp_path / "cifar", seed=1)).content_id()
    assert None not in (cifar, other) and cifar != other


def test_an_unchanged_file_is_not_hashed_again_in_a_later_process(tmp_path, monkeypatch):
    for j in range(3):
        write_image(tmp_path / "images" / "0" / f"{j}.png", seed=j)
    monkeypatch.setattr(interface, "RECENT_NS", 0)  # the files count as settled at once
    dataset = ImageFolderDataset(tmp_path / "images", num_classes=1)
    dataset.cache_dir = tmp_path / "results" / ".stimuli"
    first = dataset.content_id()
    assert dataset.digest_index().is_file()
    monkeypatch.setattr(interface, "_DIGESTS", {})  # as a new process starts
    monkeypatch.setattr(interface, "file_sha256", lambda path: f"hashed {path}")
    later = ImageFolderDataset(tmp_path / "images", num_classes=1)
    later.cache_dir = dataset.cache_dir
    assert later.content_id() == first  # every hash from the index
    write_image(tmp_path / "images" / "0" / "2.png", seed=7)
    assert later.image_digests()[2] == f"hashed {tmp_path / 'images' / '0' / '2.png'}"
