"""The dataset interface every stimulus set implements: an ordered list of (image, label[,
mask]), its fingerprint, and the file-backed base that image folders and ImageNet-S share."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .images import load_image
from .masks import decode_mask

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class Item:
    """One stimulus on disk: image path, class index, and its mask (path and category id)."""

    path: Path
    label: int
    mask_path: Optional[Path] = None
    category: Optional[int] = None


class ImageDataset:
    """Base: an ordered stimulus list with labels, images, and optionally masks."""

    name: str = "images"
    has_masks: bool = False
    #: the stimulus caches this dataset reads from (:func:`vitcls_utils.stores.stimulus_cache.use`)
    cache_dir: Optional[Path] = None

    def __init__(self, num_classes: int, root: Optional[Path] = None) -> None:
        self.num_classes = num_classes
        self.root = root

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def labels(self) -> List[int]:
        raise NotImplementedError

    def item_names(self) -> List[str]:
        """One name per stimulus (relative path, or a generator index), in order."""
        raise NotImplementedError

    def load(self, i: int) -> Tuple[Optional[Image.Image], int]:
        """Image ``i`` as RGB, and its status."""
        raise NotImplementedError

    def load_with_mask(self, i: int) -> Tuple[Optional[Image.Image], int,
                                              Optional[np.ndarray], Optional[int]]:
        """Image ``i``, its status, its mask's category ids (or None) and its category id."""
        image, status = self.load(i)
        return image, status, None, None

    def load_mask(self, i: int) -> Tuple[Optional[np.ndarray], Optional[int]]:
        """The category ids of image ``i``'s mask (or None) and its category id, without
        decoding the image where the dataset can (a cached stimulus needs only its mask)."""
        _, _, ids, category = self.load_with_mask(i)
        return ids, category

    def selection(self) -> str:
        """How the stimuli were chosen (recorded in the store's manifest)."""
        return "all images"

    def fingerprint(self) -> str:
        """sha256 of the ordered (name, label) list: identifies the stimulus set."""
        digest = hashlib.sha256()
        for name, label in zip(self.item_names(), self.labels, strict=True):
            digest.update(f"{name}\t{label}\n".encode())
        return digest.hexdigest()

    def describe(self) -> Dict[str, object]:
        """What goes into an extraction manifest."""
        return {"name": self.name, "root": str(self.root) if self.root else None,
                "n_images": len(self), "num_classes": self.num_classes,
                "fingerprint": self.fingerprint(), "selection": self.selection(),
                "has_masks": self.has_masks}


class FileDataset(ImageDataset):
    """A dataset whose stimuli are image files (and mask files) listed as :class:`Item`."""

    def __init__(self, items: Sequence[Item], num_classes: int, root: Optional[Path]) -> None:
        super().__init__(num_classes, root)
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> List[int]:
        return [item.label for item in self.items]

    def item_names(self) -> List[str]:
        root = self.root
        return [(item.path.relative_to(root) if root else item.path).as_posix()
                for item in self.items]

    def load(self, i: int) -> Tuple[Optional[Image.Image], int]:
        return load_image(self.items[i].path)

    def load_with_mask(self, i: int):
        image, status = self.load(i)
        return (image, status) + self.load_mask(i)

    def load_mask(self, i: int) -> Tuple[Optional[np.ndarray], Optional[int]]:
        item = self.items[i]
        ids = None
        if item.mask_path is not None and item.mask_path.is_file():
            try:
                with Image.open(item.mask_path) as mask:
                    ids = decode_mask(mask)
            except Exception:
                ids = None
        return ids, item.category


def image_files(folder: Path) -> List[Path]:
    """Image files of a folder, sorted by name (hidden files left out)."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
