"""Datasets of (image, label[, mask]) in a fixed, documented order, behind one small interface.

A dataset knows its length, labels, how to decode image ``i`` and, when it has segmentation
masks, the category ids of image ``i``'s mask. Its fingerprint (a hash of the ordered stimulus
list) and, for stimuli read from files, its content identity (the files' hashes:
:mod:`vitcls_utils.datasets.interface`) go into the extraction store's configuration. Images are decoded lazily; an image that
cannot be decoded is skipped, counted and reported rather than stopping a long run.

Kinds (``--data``): ``folder`` (ROOT/<class>/<image>), ``imagenet-s`` (ImageNetS919 with masks),
``cifar100`` (torchvision's CIFAR-100 test split), ``toy`` (the embedded synthetic set).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import toy
from .cifar import Cifar100Dataset
# the interface, decoding and each dataset live in their own modules; re-exported here for
# the datasets' callers
from .interface import (IMAGE_SUFFIXES, FileDataset, ImageDataset, Item,  # noqa: F401
                        image_files)
from ..base.errors import DatasetError
from .imagenet_s import IMAGENET_S_EXCLUDED, IMAGENET_S_HELP, ImageNetSDataset  # noqa: F401
from .images import CONVERTED, EXIF_IGNORED, OK, UNREADABLE, load_image  # noqa: F401
from .masks import decode_mask

WNID = re.compile(r"^n\d{8}$")
KINDS = ("folder", "imagenet-s", "cifar100", "toy")
#: dataset kinds with segmentation masks (token class/context labels)
MASKED_KINDS = ("imagenet-s", "toy")
#: the few-shot split each kind offers for training linear probes (catalogue E16)
PROBE_SPLITS = {"toy": "probe-train", "imagenet-s": "test"}
#: the label space of each kind whose classes are fixed (a folder's follow the model's head)
KIND_CLASSES = {"toy": toy.NUM_CLASSES, "cifar100": 100, "imagenet-s": 1000}


def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet-1k wnids in class-index order (the order of timm's heads)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def imagenet_class_names() -> List[str]:
    """Short human-readable names of the 1000 ImageNet-1k classes, in class-index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]


def class_names(dataset: str, num_classes: int) -> List[str]:
    """Readable class names for a dataset kind: the toy's, ImageNet's for 1000-class data,
    else the class indices as text.

    Args:
        dataset: the dataset kind (``--data``), e.g. "toy" or "imagenet-s".
        num_classes: the model's number of classes.

    Returns:
        ``num_classes`` names, indexed by class (toy: its class names).
    """
    if dataset == "toy":
        return list(toy.CLASS_NAMES)
    if num_classes == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


class ImageFolderDataset(FileDataset):
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
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            label = index_of(folder.name)
            if label is None:
                bad_names.append(folder.name)
                continue
            files = image_files(folder)
            if n_per_class is not None:
                files = files[:n_per_class]
            per_class.setdefault(label, []).extend(files)
        if bad_names:
            shown = ", ".join(bad_names[:5]) + (" ..." if len(bad_names) > 5 else "")
            if num_classes != 1000 and all(WNID.match(name) for name in bad_names):
                raise DatasetError(
                    f"{root}: class folders {shown} are ImageNet wnids, which name classes of a "
                    f"1000-class head, but this model's head has {num_classes} classes: pick a "
                    f"variant with an ImageNet head, or name the folders by class index "
                    f"0..{num_classes - 1}")
            raise DatasetError(
                f"{root}: class folders {shown} are neither ImageNet wnids nor class indices "
                f"below {num_classes}; {layout}")
        items = [Item(path, label) for label in sorted(per_class) for path in per_class[label]]
        if not items:
            raise DatasetError(f"no images found under {root}; {layout}")
        self.n_per_class = n_per_class
        super().__init__(items, num_classes, root)

    def selection(self) -> str:
        return ("all images" if self.n_per_class is None else
                f"first {self.n_per_class} per class by sorted file name")


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


# ----------------------------------------------------------------------------------------------
# Toy
# ----------------------------------------------------------------------------------------------
class ToyDataset(ImageDataset):
    """A split of the embedded synthetic dataset (:mod:`vitcls_utils.datasets.toy`), with masks."""

    name = "toy"
    has_masks = True

    def __init__(self, split: str = "val", n_per_class: Optional[int] = None, seed: int = 0):
        if split not in toy.SPLITS:
            raise DatasetError(f"toy split must be one of {list(toy.SPLITS)}, not {split!r}")
        self.split, self.seed = split, seed
        self.indices = toy.split_indices(split, n_per_class)
        self.n_per_class = len(self.indices) // toy.NUM_CLASSES
        super().__init__(num_classes=toy.NUM_CLASSES, root=None)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> List[int]:
        return [i // toy.SPLIT_SIZES[self.split] for i in self.indices]

    def item_names(self) -> List[str]:
        return [f"toy-v{toy.GENERATOR_VERSION}/{self.split}/seed{self.seed}/{i}"
                for i in self.indices]

    def load(self, i: int):
        return toy.generate(self.split, self.indices[i], self.seed).image, OK

    def load_with_mask(self, i: int):
        sample = toy.generate(self.split, self.indices[i], self.seed)
        return sample.image, OK, decode_mask(sample.mask), sample.label + 1

    def selection(self) -> str:
        return f"toy {self.split} split, {self.n_per_class} per class, seed {self.seed}"


def build_dataset(kind: str, data_dir: Optional[str], num_classes: int,
                  n_per_class: Optional[int] = None, split: Optional[str] = None,
                  download: bool = False) -> ImageDataset:
    """The dataset named on the command line (``--data``), checked against the model's head.
    Arguments that the kind would ignore are refused rather than silently dropped."""
    if n_per_class is not None and (isinstance(n_per_class, bool) or n_per_class < 1):
        raise DatasetError(f"n_per_class must be a positive count of images per class (or "
                           f"unset for the default), not {n_per_class!r}")
    if split is not None and kind in ("folder", "cifar100"):
        raise DatasetError(f"--split applies to imagenet-s (validation, test) and toy (val, "
                           f"train, probe-train); {kind} has one split: drop --split {split}")
    if data_dir and kind == "toy":
        raise DatasetError(f"--data toy is generated, not read from disk: drop --data-dir "
                           f"{data_dir}")
    if download and kind != "cifar100":
        raise DatasetError(f"--download applies to cifar100 only, not {kind}")
    if kind == "folder":
        if not data_dir:
            raise DatasetError("--data folder needs --data-dir DIR (ROOT/<class>/<image>.jpg)")
        dataset: ImageDataset = ImageFolderDataset(Path(data_dir), num_classes=num_classes,
                                                   n_per_class=n_per_class)
    elif kind == "imagenet-s":
        if not data_dir:
            raise DatasetError(f"--data imagenet-s needs --data-dir ROOT.\n{IMAGENET_S_HELP}")
        dataset = ImageNetSDataset(Path(data_dir), split=split or "validation",
                                   n_per_class=n_per_class)
    elif kind == "cifar100":
        if not data_dir:
            raise DatasetError("--data cifar100 needs --data-dir ROOT (holding cifar-100-python/)")
        dataset = Cifar100Dataset(Path(data_dir), n_per_class=n_per_class or 5, download=download)
    elif kind == "toy":
        dataset = ToyDataset(split=split or "val", n_per_class=n_per_class)
    else:
        raise DatasetError(f"unknown dataset {kind!r}; available: {', '.join(KINDS)}")
    if dataset.num_classes != num_classes:
        raise DatasetError(f"dataset {kind} has {dataset.num_classes} classes but the model's "
                           f"head has {num_classes}; pick the variant made for it "
                           "(see `vitcls variants`, column dataset)")
    return dataset


def probe_training_set(kind: str, data_dir: Optional[str], num_classes: int) -> ImageDataset:
    """The few-shot training images of the linear probes: the toy's ``probe-train`` split, or
    ImageNet-S ``test`` (10 per class, as the paper). Other kinds have none.

    Args:
        kind: the dataset kind, "toy" or "imagenet-s".
        data_dir: the dataset's root folder (None for the toy, which is generated).
        num_classes: the model's number of classes, checked against the dataset's.

    Returns:
        The probe training split as an :class:`ImageDataset`.

    Raises:
        DatasetError: for a kind without a few-shot split, or a dataset that does not fit.
    """
    if kind not in PROBE_SPLITS:
        raise DatasetError(f"linear probes need a few-shot training split, which only "
                           f"{' and '.join(PROBE_SPLITS)} have, not {kind!r}")
    return build_dataset(kind, data_dir, num_classes=num_classes, split=PROBE_SPLITS[kind])
