"""Image folders: deterministic order, labels from wnids or indices, clear layout errors."""
from __future__ import annotations

import pytest

from conftest import write_image
from vitcls_utils.datasets.kinds import (CONVERTED, OK, UNREADABLE, ImageFolderDataset,
                                         build_dataset, imagenet_wnids, load_image)
from vitcls_utils.base.errors import DatasetError


def test_order_labels_and_fingerprint(tmp_path):
    root = tmp_path / "imgs"
    for name in ["b.jpg", "a.jpg", "c.JPEG"]:
        write_image(root / "n01443537" / name, seed=1)
    write_image(root / "n01440764" / "z.png", seed=2)
    (root / "n01440764" / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(root)
    assert [i.path.name for i in dataset.items] == ["z.png", "a.jpg", "b.jpg", "c.JPEG"]
    assert dataset.labels == [0, 1, 1, 1]  # tench, goldfish in ImageNet-1k order
    assert imagenet_wnids()[:2] == ["n01440764", "n01443537"]
    first = dataset.fingerprint()
    assert len(ImageFolderDataset(root, n_per_class=2)) == 3
    assert ImageFolderDataset(root).fingerprint() == first
    (root / "n01443537" / "a.jpg").rename(root / "n01443537" / "d.jpg")
    assert ImageFolderDataset(root).fingerprint() != first


def test_integer_class_folders(tmp_path):
    write_image(tmp_path / "7" / "x.jpg", seed=0)
    write_image(tmp_path / "12" / "x.jpg", seed=0)
    assert ImageFolderDataset(tmp_path, num_classes=100).labels == [7, 12]


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "no images found"),
    ("bad_names", "neither ImageNet wnids nor class indices"),
    ("index_too_large", "below 10"),
])
def test_layout_errors_show_the_expected_tree(tmp_path, case, message):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "empty":
        (root / "3").mkdir()
    if case == "bad_names":
        write_image(root / "cats" / "x.jpg", seed=0)
    if case == "index_too_large":
        write_image(root / "10" / "x.jpg", seed=0)
    with pytest.raises(DatasetError, match=message) as info:
        ImageFolderDataset(root, num_classes=10)
    assert "ROOT/<class>/<image>.jpg" in str(info.value)


def test_build_dataset_errors():
    with pytest.raises(DatasetError, match="--data-dir"):
        build_dataset("folder", None, num_classes=1000)
    with pytest.raises(DatasetError, match="unknown dataset"):
        build_dataset("imagenet-x", "/tmp", num_classes=1000)


def test_load_image_statuses(tmp_path):
    assert load_image(write_image(tmp_path / "a.jpg", seed=0))[1] == OK
    image, status = load_image(write_image(tmp_path / "b.tif", seed=0, mode="CMYK"))
    assert status == CONVERTED and image.mode == "RGB"
    (tmp_path / "c.jpg").write_bytes(b"garbage")
    assert load_image(tmp_path / "c.jpg") == (None, UNREADABLE)


def test_probe_training_sets_are_named_in_one_place():
    from vitcls_utils.datasets.kinds import PROBE_SPLITS, probe_training_set

    train = probe_training_set("toy", None, 24)
    assert train.split == PROBE_SPLITS["toy"] == "probe-train" and len(train) == 240
    with pytest.raises(DatasetError, match="toy and imagenet-s have, not 'cifar100'"):
        probe_training_set("cifar100", "/nowhere", 100)
