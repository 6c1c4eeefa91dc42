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


def their_background(image: np.ndarray, xml_path) -> np.ndarray:
    """The authors' ``read_xml.translate_obj`` + ``BackgroundForegroundImageNet.__getitem__``
    written out: each own-class object's [xmin, xmax, ymin, ymax] as the XML has them, and
    ``background[:, int(y1):int(y2), int(x1):int(x2)] = 0`` on the [C, H, W] image."""
    import xml.etree.ElementTree as ET

    wnid = xml_path.parent.name
    boxes = [[o.find("bndbox").findtext(k) for k in ("xmin", "xmax", "ymin", "ymax")]
             for o in ET.parse(xml_path).getroot().iter("object") if o.findtext("name") == wnid]
    background = image.transpose(2, 0, 1).copy()
    for x1, x2, y1, y2 in boxes:
        background[:, int(y1):int(y2), int(x1):int(x2)] = 0
    return background.transpose(1, 2, 0)


def test_the_authors_box_convention_is_their_slicing_and_voc_adds_the_first_row_and_column(
        tmp_path):
    from conftest import write_image
    from vitcls_utils.datasets.kinds import imagenet_wnids

    wnid, other = imagenet_wnids()[5], imagenet_wnids()[6]
    stem = f"{wnid}_17"
    xml = tmp_path / "xml" / wnid / f"{stem}.xml"
    xml.parent.mkdir(parents=True)
    xml.write_text(
        "<annotation><size><width>40</width><height>30</height></size>"
        f"<object><name>{wnid}</name><bndbox><xmin>3</xmin><ymin>2</ymin><xmax>12</xmax>"
        "<ymax>9</ymax></bndbox></object>"
        f"<object><name>{other}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax>"
        "<ymax>30</ymax></bndbox></object>"
        f"<object><name>{wnid}</name><bndbox><xmin>20</xmin><ymin>15</ymin><xmax>40</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>")
    write_image(tmp_path / "imgs" / wnid / f"{stem}.JPEG", 0, size=(40, 30))
    folder = build_dataset("folder", str(tmp_path / "imgs"), num_classes=1000)
    theirs = fgbg.with_boxes(folder, str(tmp_path / "xml"), convention="authors")
    ours = fgbg.with_boxes(folder, str(tmp_path / "xml"))
    image, _, ids, category = theirs.load_with_mask(0)
    pixels = np.asarray(image)
    _, expected_background = fgbg.split_foreground(pixels, ids == category)
    np.testing.assert_array_equal(expected_background, their_background(pixels, xml))
    their_mask = ids == category
    voc_mask = ours.load_with_mask(0)[2] == category
    assert their_mask.sum() == 9 * 7 + 20 * 15  # xmax - xmin by ymax - ymin, per box
    assert voc_mask.sum() == 10 * 8 + 21 * 16  # VOC's inclusive corners: one more each way
    assert (their_mask <= voc_mask).all()
    assert voc_mask[1, 2:12].all() and not their_mask[1].any()  # the first row (ymin - 1)
    assert voc_mask[1:9, 2].all() and not their_mask[:, 2].any()  # the first column
    with pytest.raises(DatasetError, match="box convention"):
        fgbg.with_boxes(folder, str(tmp_path / "xml"), convention="pascal")
