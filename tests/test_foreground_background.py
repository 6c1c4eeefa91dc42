"""Foreground/background images, boxes and Table 2's normalisation (vitcls_utils.analysis.foreground_background)."""
import numpy as np
import pytest
from PIL import Image

from vitcls_utils.analysis import foreground_background as fgbg
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import DatasetError


def test_foreground_plus_background_is_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.random((20, 30)) < 0.3
    fg, bg = fgbg.split_foreground(image, mask)
    assert np.array_equal(fg + bg, image)
    assert not bg[mask].any() and not fg[~mask].any()
    assert np.array_equal(fg[mask], image[mask])
    with pytest.raises(DatasetError, match="differ"):
        fgbg.split_foreground(image, mask[:10])


def test_box_mask_and_readers(tmp_path):
    mask = fgbg.box_mask([(2, 1, 5, 3), (8, 8, 20, 20)], 10, 10)
    assert mask.sum() == 3 * 2 + 2 * 2 and mask[1, 2] and not mask[3, 2] and mask[9, 9]
    xml = tmp_path / "n01.xml"
    xml.write_text(
        "<annotation><size><width>40</width><height>30</height></size>"
        "<object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax>"
        "<ymax>12</ymax></bndbox></object>"
        "<object><name>n02</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>6</xmax>"
        "<ymax>6</ymax></bndbox></object></annotation>")
    boxes, size = fgbg.read_voc_boxes(xml, "n01")
    assert boxes == [(0, 1, 10, 12)] and size == (40, 30)
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3 4 n02 5 6 7 8 \n")
    assert fgbg.read_val_boxes(csv) == {
        "ILSVRC2012_val_00000001": [("n01", (1, 2, 3, 4)), ("n02", (5, 6, 7, 8))]}
    csv.write_text("ImageId,PredictionString\nx,n01 1 2 3\n")
    with pytest.raises(DatasetError, match="malformed"):
        fgbg.read_val_boxes(csv)


def test_box_masked_dataset_scales_boxes(tmp_path):
    folder = tmp_path / "val" / "3"
    folder.mkdir(parents=True)
    Image.new("RGB", (20, 10), (200, 100, 50)).save(folder / "a.png")
    Image.new("RGB", (20, 10), (1, 2, 3)).save(folder / "b.png")
    data = build_dataset("folder", str(tmp_path / "val"), num_classes=5)
    wnids = ["w0", "w1", "w2", "w3", "w4"]
    boxes = {"a": [("w3", (0, 0, 10, 5)), ("w1", (10, 5, 20, 10))]}
    masked = fgbg.BoxMaskedDataset(data, boxes, wnids, sizes={"a": (40, 20)})
    image, _, ids, category = masked.load_with_mask(0)
    assert category == 4 and ids.shape == (10, 20)
    expected = np.zeros((10, 20), dtype=np.int64)
    expected[:2, :5] = 4  # the w3 box (0, 0, 10, 5) of a 40x20 original, halved; w1's ignored
    assert np.array_equal(ids, expected)
    assert masked.load_with_mask(1)[2] is None  # no box of its class: no mask


def test_table2_row():
    assert fgbg.table2_row(80.0, 60.0, 20.0) == {"full": 80.0, "foreground": 75.0,
                                                 "background": 25.0}
    undefined = fgbg.table2_row(0.0, 1.0, 1.0)
    assert undefined["full"] == 0 and np.isnan(undefined["foreground"])
    with pytest.raises(DatasetError, match="percentage"):
        fgbg.table2_row(float("nan"), 1.0, 1.0)


def test_with_boxes_reads_a_val_csv_and_refuses_what_it_cannot_use(tmp_path):
    from conftest import write_image
    from vitcls_utils.datasets.kinds import imagenet_wnids

    wnid = imagenet_wnids()[3]
    write_image(tmp_path / "imgs" / wnid / "ILSVRC2012_val_00000001.JPEG", 0, size=(40, 30))
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{wnid} 0 0 10 10 \n")
    folder = build_dataset("folder", str(tmp_path / "imgs"), num_classes=1000)
    boxed = fgbg.with_boxes(folder, str(csv))
    image, _, ids, category = boxed.load_with_mask(0)
    assert category == folder.labels[0] + 1 and (ids == category).sum() == 100
    with pytest.raises(DatasetError, match="object masks"):
        fgbg.with_boxes(folder, None)
    with pytest.raises(DatasetError, match="neither"):
        fgbg.with_boxes(folder, str(tmp_path / "missing.csv"))
    assert fgbg.with_boxes(build_dataset("toy", None, 24, 1), None).has_masks
