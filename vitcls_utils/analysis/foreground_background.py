"""Foreground-only and background-only images (Ghiasi et al.'s Table 2; chapter 6, G6), from
segmentation masks (ImageNet-S, the toy) or ImageNet bounding boxes.

At the image's original resolution: B ("background only") is the image with the object's
pixels set to 0, F ("foreground only") is X - B, so that F + B = X exactly. Both then go through
the variant's resize, crop and normalisation like X. Table 2 reports top-5 normalised by the
full image's: foreground = 100 · top5(F) / top5(X), background = 100 · top5(B) / top5(X).

Box convention (catalogue G6): VOC corners are 1-based and inclusive, read here as such
(``convention="voc"``, the default). The authors' code (their ``read_xml`` and
``BackgroundForegroundImageNet``) slices the raw corners ``[ymin:ymax, xmin:xmax]``, so each of
their boxes loses its first row and column: ``convention="authors"``. An image none of whose
XML objects is of its class is skipped here (no mask); their code keeps it with no box (an
all-black foreground) when the XML has several objects, and raises when it has one.
"""
from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets.interface import ImageDataset
from ..base.errors import DatasetError

#: a box in pixel coordinates of the original image: (xmin, ymin, xmax, ymax), end exclusive
Box = Tuple[int, int, int, int]
#: how VOC corners become a box: "voc" (1-based, inclusive) or "authors" (raw, sliced)
BOX_CONVENTIONS = ("voc", "authors")


def split_foreground(image: np.ndarray, object_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(F, B) of a uint8 [H, W, 3] image: B has the object's pixels zeroed, F = X - B."""
    if object_mask.shape != image.shape[:2]:
        raise DatasetError(f"mask {object_mask.shape} and image {image.shape[:2]} differ in size")
    background = image.copy()
    background[object_mask.astype(bool)] = 0
    return image - background, background


def box_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """[H, W] booleans, True inside any of the boxes (clipped to the image)."""
    mask = np.zeros((height, width), dtype=bool)
    for xmin, ymin, xmax, ymax in boxes:
        rows = slice(max(0, int(ymin)), min(height, int(ymax)))
        mask[rows, max(0, int(xmin)):min(width, int(xmax))] = True
    return mask


def _check_convention(convention: str) -> None:
    if convention not in BOX_CONVENTIONS:
        raise DatasetError(f"box convention must be one of {BOX_CONVENTIONS}, not "
                           f"{convention!r}")


def read_voc_boxes(xml_path: Path, wnid: str, convention: str = "voc"
                   ) -> Tuple[List[Box], Tuple[int, int]]:
    """The boxes of class ``wnid`` in one ImageNet train annotation (PASCAL VOC XML, as in
    image-net.org's ``bboxes_annotations.tar.gz``) and the annotated (width, height). VOC
    corners are 1-based and inclusive; the boxes returned are 0-based, end exclusive
    (``convention="voc"``), or the raw corners, which :func:`box_mask` then slices as the
    authors' code does, one row and column short at the top left (``"authors"``)."""
    _check_convention(convention)
    shift = 1 if convention == "voc" else 0
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes = []
    for obj in root.iter("object"):
        if obj.findtext("name") != wnid:
            continue
        bb = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (int(float(bb.findtext(k))) for k in
                                  ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((xmin - shift, ymin - shift, xmax, ymax))
    return boxes, (width, height)


def read_val_boxes(csv_path: Path) -> Dict[str, List[Tuple[str, Box]]]:
    """ImageNet validation boxes from Kaggle's ``LOC_val_solution.csv`` (``ImageId,
    PredictionString`` with "wnid xmin ymin xmax ymax ..." in pixels): image id -> boxes."""
    out: Dict[str, List[Tuple[str, Box]]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            fields = row["PredictionString"].split()
            if len(fields) % 5:
                raise DatasetError(f"{csv_path}: {row['ImageId']} has a malformed box list")
            out[row["ImageId"]] = [
                (fields[i], tuple(int(v) for v in fields[i + 1:i + 5]))  # type: ignore[misc]
                for i in range(0, len(fields), 5)]
    return out


class BoxMaskedDataset(ImageDataset):
    """An ImageNet folder dataset whose masks come from boxes: pixels inside the boxes of the
    image's own class are the object (id = class + 1), the rest background, as token labels
    and fg/bg images expect. Images without boxes of their class are unreadable here.

    Args:
        dataset: a ``folder`` dataset of ImageNet images (``<wnid>/<image>``).
        boxes: image file stem -> [(wnid, box)], from :func:`read_val_boxes` or
            :func:`voc_boxes_for`.
    """

    has_masks = True

    def __init__(self, dataset, boxes: Dict[str, List[Tuple[str, Box]]], wnids: Sequence[str],
                 sizes: Optional[Dict[str, Tuple[int, int]]] = None):
        super().__init__(dataset.num_classes, getattr(dataset, "root", None))
        self.dataset, self.boxes, self.wnids = dataset, boxes, list(wnids)
        self.sizes = sizes or {}

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> List[int]:
        return self.dataset.labels

    def item_names(self) -> List[str]:
        return self.dataset.item_names()

    def load(self, i: int):
        return self.dataset.load(i)

    def load_with_mask(self, i: int):
        image, status = self.dataset.load(i)
        label = self.labels[i]
        stem = Path(self.item_names()[i]).stem
        own = [box for wnid, box in self.boxes.get(stem, []) if wnid == self.wnids[label]]
        if image is None or not own:
            return image, status, None, None
        annotated = self.sizes.get(stem, image.size)
        if annotated != image.size:  # a resized copy of ImageNet: boxes scale with the image
            sx, sy = image.width / annotated[0], image.height / annotated[1]
            own = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in own]
        ids = box_mask(own, image.height, image.width).astype(np.int64) * (label + 1)
        return image, status, ids, label + 1

    def selection(self) -> str:
        return self.dataset.selection() + ", object masks from boxes"


def voc_boxes_for(annotations: Path, names: Sequence[str], convention: str = "voc"
                  ) -> Tuple[Dict[str, List[Tuple[str, Box]]], Dict[str, Tuple[int, int]]]:
    """Boxes and annotated (width, height) of train images ``<wnid>/<stem>.JPEG`` from
    ``annotations/<wnid>/<stem>.xml`` (image-net.org's layout), read by :func:`read_voc_boxes`
    with ``convention``; the sizes let :class:`BoxMaskedDataset` rescale the boxes for a
    resized copy of the images."""
    boxes: Dict[str, List[Tuple[str, Box]]] = {}
    sizes: Dict[str, Tuple[int, int]] = {}
    for name in names:
        wnid, stem = Path(name).parent.name, Path(name).stem
        xml = Path(annotations) / wnid / f"{stem}.xml"
        if xml.is_file():
            found, sizes[stem] = read_voc_boxes(xml, wnid, convention)
            boxes[stem] = [(wnid, box) for box in found]
    return boxes, sizes


def table2_row(full_top5: float, foreground_top5: float, background_top5: float
               ) -> Dict[str, float]:
    """Table 2's normalised top-5: the full image's, and foreground and background as % of it
    (NaN, undefined, when the full images' top-5 is 0, as a random model's can be)."""
    if not full_top5 >= 0:
        raise DatasetError(f"top-5 is a percentage, not {full_top5!r}")
    if full_top5 == 0:
        return {"full": 0.0, "foreground": float("nan"), "background": float("nan")}
    return {"full": full_top5, "foreground": 100 * foreground_top5 / full_top5,
            "background": 100 * background_top5 / full_top5}


def object_share(masks: Sequence[Optional[np.ndarray]]) -> float:
    """Mean fraction of the image the object covers (what F keeps), over the masks given."""
    shares = [float(m.mean()) for m in masks if m is not None]
    return float(np.mean(shares)) if shares else float("nan")


def with_boxes(dataset, boxes: Optional[str], convention: str = "voc"):
    """``dataset`` with object masks from ImageNet boxes: ``boxes`` is Kaggle's
    ``LOC_val_solution.csv`` (val images) or a folder of image-net.org's train XMLs
    (``<wnid>/<stem>.xml``); None keeps the dataset's own masks (the toy, ImageNet-S).
    Images with no box of their own class have no mask and are left out of Table 2.

    Args:
        dataset: the stimuli; an ImageNet ``folder`` dataset when ``boxes`` is given.
        boxes: path of ``LOC_val_solution.csv`` or of a folder of train box XMLs; or None.
        convention: how the XMLs' corners are read: "voc" (1-based, inclusive: correct) or
            "authors" (the raw corners sliced, as their code: each box one row and column
            short); the val CSV's boxes are used as they are.

    Returns:
        ``dataset`` itself (``boxes`` None), or a :class:`BoxMaskedDataset` around it.

    Raises:
        DatasetError: no masks and no boxes, a ``boxes`` path that is neither, no box
            belonging to the dataset's images, or an unknown ``convention``.
    """
    from ..datasets.kinds import imagenet_wnids

    _check_convention(convention)
    if boxes is None:
        if not dataset.has_masks:
            raise DatasetError("foreground/background needs object masks: use the toy or "
                               "ImageNet-S, or give boxes= (LOC_val_solution.csv or a folder of "
                               "ImageNet train box XMLs) for an ImageNet folder")
        return dataset
    path = Path(boxes)
    if path.is_file():
        found, sizes = read_val_boxes(path), None
    elif path.is_dir():
        found, sizes = voc_boxes_for(path, dataset.item_names(), convention)
    else:
        raise DatasetError(f"boxes {boxes!r} is neither a LOC_val_solution.csv file nor a "
                           "folder of box XMLs")
    if not found:
        raise DatasetError(f"no box in {boxes} belongs to an image of the dataset")
    return BoxMaskedDataset(dataset, found, imagenet_wnids(), sizes)
