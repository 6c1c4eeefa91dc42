"""ImageNet-S and CIFAR-100 loaders on fabricated trees in the real on-disk formats."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import WNIDS, make_imagenet_s
from vitcls_utils.datasets.kinds import Cifar100Dataset, ImageNetSDataset, build_dataset
from vitcls_utils.base.errors import DatasetError
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.datasets.masks import decode_mask, token_labels, token_labels_paper
from vitcls_utils.model.loading import load_variant
from vitcls_utils.model.layout import TokenLayout


def test_sorted_selection_excludes_and_skips(tmp_path):
    dataset = ImageNetSDataset(make_imagenet_s(tmp_path))
    assert dataset.labels == [0] * 5 + [1] * 5 + [3] * 5  # class 2 has < 5, excluded class out
    names = dataset.item_names()
    assert names[0] == f"validation/{WNIDS[0]}/ILSVRC2012_val_00000003.JPEG"
    assert names[4].endswith("ILSVRC2012_val_00000031.JPEG")  # first 5 of 6 by sorted name
    assert "sorted file name" in dataset.selection()
    assert dataset.has_masks and dataset.items[5].category == 300


def test_authors_csv_is_used_when_present(tmp_path):
    dataset = ImageNetSDataset(make_imagenet_s(tmp_path, with_csv=True))
    assert dataset.labels == [0] * 5 + [3]
    assert dataset.item_names()[0].endswith("ILSVRC2012_val_00000010.JPEG")
    assert "validation_stim_info.csv" in dataset.selection()
    assert ImageNetSDataset(tmp_path, use_csv=False).labels[:6] == [0] * 5 + [1]


def test_probe_split_takes_ten_per_class(tmp_path):
    dataset = ImageNetSDataset(make_imagenet_s(tmp_path), split="test")
    assert dataset.labels == [0] * 10 and not dataset.has_masks


def test_extraction_on_the_tree_with_masks(tmp_path):
    root = make_imagenet_s(tmp_path / "data")
    model = load_variant("vit_b32_random")
    dataset = build_dataset("imagenet-s", str(root), num_classes=1000)
    res = open_store(extract(model, dataset, tmp_path / "out", batch_size=8), )
    assert res.n_unreadable == 1 and res.rank.shape == (14, 36, 50)
    assert res.manifest["counts_masks"] == {"images_without_mask": 1}
    assert "sorted file name" in res.manifest["config"]["dataset"]["selection"]
    assert res.token_class.shape == res.token_class_paper.shape == (14, 50)
    assert (res.token_class[:, 0] == -1).all()
    missing = [i for i in range(14) if res.token_class[i].max() < 0]
    assert len(missing) == 1
    # the stored labels are the masks module's, applied to this image
    item = dataset.items[0]
    ids = decode_mask(Image.open(item.mask_path))
    layout = TokenLayout.of(model)
    expected = token_labels(ids, item.category, model.vitcls_info.variant.preprocess,
                            layout.grid, layout.num_prefix)
    np.testing.assert_array_equal(res.token_class[0], expected)
    np.testing.assert_array_equal(res.token_class_paper[0],
                                  token_labels_paper(ids, item.category, layout.grid, 1))
    # object = top-left quarter of the image -> top-left 4x4 of the 7x7 grid (aligned rule)
    assert res.token_class[0, 1:].reshape(7, 7)[:3, :3].all()
    assert res.token_class[0, 1:].reshape(7, 7)[4:, 4:].sum() == 0


@pytest.mark.parametrize("case", ["missing", "no_mapping", "no_categories"])
def test_imagenet_s_layout_errors_show_the_tree(tmp_path, case):
    root = tmp_path / "d"
    if case != "missing":
        make_imagenet_s(root)
    if case == "no_mapping":
        (root / "ImageNetS919" / "LOC_synset_mapping.txt").unlink()
    if case == "no_categories":
        (root / "ImageNetS919" / "ImageNetS_categories_im919.txt").unlink()
    with pytest.raises(DatasetError) as info:
        ImageNetSDataset(root)
    assert "LUSSeg/ImageNet-S" in str(info.value)
    assert "validation-segmentation/<wnid>/<name>.png" in str(info.value)


def make_cifar(root: Path, labels, evil: bool = False) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    payload = {b"data": data, b"fine_labels": list(labels), b"coarse_labels": [0] * len(labels)}
    if evil:
        payload[b"x"] = os.system  # a callable: must never be unpickled
    with open(folder / "test", "wb") as handle:
        pickle.dump(payload, handle, protocol=2)
    return root


def test_cifar_first_five_per_label_in_order_of_first_appearance(tmp_path):
    labels = [7, 3, 7, 7, 3, 7, 7, 7, 9, 3] + [3] * 6
    dataset = Cifar100Dataset(make_cifar(tmp_path, labels))
    assert dataset.labels == [7] * 5 + [3] * 5 + [9]
    assert dataset.item_names()[:6] == ["test[0]", "test[2]", "test[3]", "test[5]", "test[6]",
                                        "test[1]"]
    image, _ = dataset.load(0)
    raw = np.random.default_rng(0).integers(0, 256, (16, 3072), dtype=np.uint8)[0]
    np.testing.assert_array_equal(np.asarray(image), raw.reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match="cifar-100-python"):
        Cifar100Dataset(tmp_path)
    with pytest.raises(DatasetError, match="cannot read"):
        Cifar100Dataset(make_cifar(tmp_path / "evil", [1, 2], evil=True))
    with pytest.raises(DatasetError, match="100 classes but the model's head has 1000"):
        build_dataset("cifar100", str(make_cifar(tmp_path / "ok", [1])), num_classes=1000)
