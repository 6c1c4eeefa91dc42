"""Datasets of (image, label) in a fixed, documented order, behind one small interface.

A dataset lists its items up front (path and class index), so the extraction store can
fingerprint the exact stimulus list and resume by position. Images are decoded lazily; an image
that cannot be decoded is skipped, counted and reported rather than stopping a long run.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from .errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
WNID = re.compile(r"^n\d{8}$")

#: status codes stored per image by extraction
OK, CONVERTED, UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Item:
    """One stimulus: image path and class index."""

    path: Path
    label: int


def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet-1k wnids in class-index order (the order of timm's heads)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def imagenet_class_names() -> List[str]:
    """Short human-readable names of the 1000 ImageNet-1k classes, in class-index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]


class ImageDataset:
    """Base: an ordered list of items, a name, and the number of classes of the labels."""

    name: str = "images"

    def __init__(self, items: Sequence[Item], num_classes: int, root: Optional[Path] = None):
        self.items = list(items)
        self.num_classes = num_classes
        self.root = root

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> List[int]:
        return [item.label for item in self.items]

    def fingerprint(self) -> str:
        """sha256 of the ordered (relative path, label) list: identifies the stimulus set."""
        digest = hashlib.sha256()
        for item in self.items:
            rel = item.path.relative_to(self.root) if self.root else item.path
            digest.update(f"{rel.as_posix()}\t{item.label}\n".encode())
        return digest.hexdigest()

    def describe(self) -> Dict[str, object]:
        """What goes into an extraction manifest."""
        return {"name": self.name, "root": str(self.root) if self.root else None,
                "n_images": len(self), "num_classes": self.num_classes,
                "fingerprint": self.fingerprint()}


def load_image(path: Path) -> Tuple[Optional[Image.Image], int]:
    """Decode an image as RGB. Returns (image or None, status: OK / CONVERTED / UNREADABLE)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "RGB":
                return image.copy(), OK
            return image.convert("RGB"), CONVERTED
    except Exception:
        return None, UNREADABLE


class ImageFolderDataset(ImageDataset):
    """``ROOT/<class>/<image>``, class folders named by ImageNet wnid or integer class index.

    Order: classes by index, files by name, so the list is the same on every filesystem.

    Args:
        root: the folder.
        num_classes: classes of the model's head (labels must be below it).
        n_per_class: keep the first n files (by name) of each class; None keeps all.
    """

    name = "folder"

    def __init__(self, root: Path, num_classes: int = 1000, n_per_class: Optional[int] = None):
        root = Path(root).expanduser()
        layout = ("expected layout: ROOT/<class>/<image>.jpg, one folder per class, named by "
                  "ImageNet wnid (n01440764) or by integer class index (0, 1, ...)")
        if not root.is_dir():
            raise DatasetError(f"image folder {root} does not exist; {layout}")
        index_of = _class_index_resolver(num_classes)
        per_class: Dict[int, List[Path]] = {}
        bad_names = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = index_of(folder.name)
            if label is None:
                bad_names.append(folder.name)
                continue
            files = sorted(p for p in folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if n_per_class is not None:
                files = files[:n_per_class]
            per_class.setdefault(label, []).extend(files)
        if bad_names:
            shown = ", ".join(bad_names[:5])
            raise DatasetError(
                f"{root}: class folders {shown} are neither ImageNet wnids nor class indices "
                f"below {num_classes}; {layout}")
        items = [Item(path, label) for label in sorted(per_class) for path in per_class[label]]
        if not items:
            raise DatasetError(f"no images found under {root}; {layout}")
        super().__init__(items, num_classes, root)


def _class_index_resolver(num_classes: int) -> Callable[[str], Optional[int]]:
    wnid_index: Dict[str, int] = {}
    if num_classes == 1000:
        wnid_index = {w: i for i, w in enumerate(imagenet_wnids())}

    def index_of(name: str) -> Optional[int]:
        if name.isdigit():
            value = int(name)
            return value if value < num_classes else None
        if WNID.match(name):
            return wnid_index.get(name)
        return None

    return index_of


def build_dataset(kind: str, data_dir: Optional[str], num_classes: int,
                  n_per_class: Optional[int] = None) -> ImageDataset:
    """The dataset named on the command line (``--data``)."""
    if kind == "folder":
        if not data_dir:
            raise DatasetError("--data folder needs --data-dir DIR (ROOT/<class>/<image>.jpg)")
        return ImageFolderDataset(Path(data_dir), num_classes=num_classes, n_per_class=n_per_class)
    raise DatasetError(f"unknown dataset {kind!r}; available: folder")
