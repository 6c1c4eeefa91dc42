"""Datasets of (image, label[, mask]) in a fixed, documented order, behind one small interface.

A dataset knows its length, labels, how to decode image ``i`` and, when it has segmentation
masks, the category ids of image ``i``'s mask. Its fingerprint (a hash of the ordered stimulus
list) goes into the extraction store's configuration. Images are decoded lazily; an image that
cannot be decoded is skipped, counted and reported rather than stopping a long run.

Kinds (``--data``): ``folder`` (ROOT/<class>/<image>), ``imagenet-s`` (ImageNetS919 with masks),
``cifar100`` (torchvision's CIFAR-100 test split), ``toy`` (the embedded synthetic set).
"""
from __future__ import annotations

import csv
import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from . import toy
from .errors import DatasetError
# status codes and decoding live in .images; re-exported for the datasets' callers
from .images import CONVERTED, EXIF_IGNORED, OK, UNREADABLE, load_image  # noqa: F401
from .masks import decode_mask

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
WNID = re.compile(r"^n\d{8}$")
KINDS = ("folder", "imagenet-s", "cifar100", "toy")
#: dataset kinds with segmentation masks (token class/context labels)
MASKED_KINDS = ("imagenet-s", "toy")


#: ImageNet classes that ImageNet-S merges with another one; the paper leaves them out
#: (catalogue §3)
IMAGENET_S_EXCLUDED = (
    "n04356056", "n04355933", "n04493381", "n02808440", "n03642806",
    "n03832673", "n04008634", "n03773504", "n03887697", "n15075141",
)
IMAGENET_S_HELP = (
    "ImageNet-S is prepared with the scripts of github.com/LUSSeg/ImageNet-S (README, "
    "'Get the ImageNet-S dataset'); the paper uses ImageNetS919. Expected tree:\n"
    "  ROOT/ImageNetS919/LOC_synset_mapping.txt\n"
    "  ROOT/ImageNetS919/validation/<wnid>/<name>.JPEG\n"
    "  ROOT/ImageNetS919/validation-segmentation/<wnid>/<name>.png\n"
    "  ROOT/ImageNetS919/validation_stim_info.csv   (optional: the authors' stimulus list)\n"
    "  ROOT/ImageNetS919/test/<wnid>/<name>.JPEG     (probe training set)\n"
    "  ROOT/ImageNetS919/ImageNetS_categories_im919.txt (mask ids; from the LUSSeg repo's "
    "data/categories/)"
)


@dataclass(frozen=True)
class Item:
    """One stimulus on disk: image path, class index, and its mask (path and category id)."""

    path: Path
    label: int
    mask_path: Optional[Path] = None
    category: Optional[int] = None


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
    else the class indices as text."""
    if dataset == "toy":
        return list(toy.CLASS_NAMES)
    if num_classes == 1000:
        return imagenet_class_names()
    return [str(i) for i in range(num_classes)]


class ImageDataset:
    """Base: an ordered stimulus list with labels, images, and optionally masks."""

    name: str = "images"
    has_masks: bool = False

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
        item = self.items[i]
        ids = None
        if item.mask_path is not None and item.mask_path.is_file():
            try:
                with Image.open(item.mask_path) as mask:
                    ids = decode_mask(mask)
            except Exception:
                ids = None
        return image, status, ids, item.category


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
            files = _image_files(folder)
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


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


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
# ImageNet-S
# ----------------------------------------------------------------------------------------------
def _imagenet_s_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"ImageNet-S root {root} does not exist.\n{IMAGENET_S_HELP}")
    for candidate in (root / "ImageNetS919", root):
        if (candidate / "LOC_synset_mapping.txt").is_file():
            return candidate
    raise DatasetError(f"{root} is not an ImageNet-S tree (no LOC_synset_mapping.txt).\n"
                       f"{IMAGENET_S_HELP}")


def _read_categories(base: Path) -> Optional[Dict[str, int]]:
    """wnid -> ImageNet-S category id (1-based line of ImageNetS_categories_im919.txt)."""
    name = "ImageNetS_categories_im919.txt"
    for candidate in (base / name, base.parent / name, base.parent / "data" / "categories" / name):
        if candidate.is_file():
            wnids = [line.split()[0] for line in candidate.read_text().splitlines() if line.strip()]
            return {w: i + 1 for i, w in enumerate(wnids)}
    return None


class ImageNetSDataset(FileDataset):
    """ImageNetS919 stimuli with their segmentation masks (catalogue §3).

    Class indices are the row numbers of ``LOC_synset_mapping.txt`` (ImageNet-1k order); the
    merged classes of :data:`IMAGENET_S_EXCLUDED` are left out. The stimulus set is the authors'
    ``<split>_stim_info.csv`` when present, else the first ``n_per_class`` images of each class
    in sorted file-name order, skipping classes with fewer (the authors' code used directory
    order, which no filesystem guarantees: bug B14).

    Args:
        root: the ImageNetS919 folder or its parent.
        split: "validation" (stimuli, with masks) or "test" (probe training set, no masks).
        n_per_class: 5 for validation, 10 for test, as in the paper.
        use_csv: read the authors' CSV when it is there.
    """

    name = "imagenet-s"

    def __init__(self, root: Path, split: str = "validation", n_per_class: Optional[int] = None,
                 use_csv: bool = True) -> None:
        if split not in ("validation", "test"):
            raise DatasetError(f"ImageNet-S split must be 'validation' or 'test', not {split!r}")
        base = _imagenet_s_root(root)
        self.split = split
        self.n_per_class = n_per_class or (5 if split == "validation" else 10)
        images_dir = base / split
        if not images_dir.is_dir():
            raise DatasetError(f"{images_dir} is missing.\n{IMAGENET_S_HELP}")
        mapping = [line.split()[0] for line in
                   (base / "LOC_synset_mapping.txt").read_text().splitlines() if line.strip()]
        index = {w: i for i, w in enumerate(mapping)}
        masks_dir = base / f"{split}-segmentation"
        self.categories = _read_categories(base) if split == "validation" else None
        csv_path = base / f"{split}_stim_info.csv"
        self.from_csv = use_csv and csv_path.is_file()
        pairs = (self._from_csv(csv_path, images_dir, index) if self.from_csv
                 else self._sorted_selection(images_dir, index))
        items = []
        for path, wnid in pairs:
            mask = masks_dir / wnid / f"{path.stem}.png" if masks_dir.is_dir() else None
            category = self.categories.get(wnid) if self.categories else None
            items.append(Item(path, index[wnid], mask, category))
        if not items:
            raise DatasetError(f"no stimuli found under {images_dir}.\n{IMAGENET_S_HELP}")
        self.has_masks = split == "validation" and masks_dir.is_dir()
        if self.has_masks and self.categories is None:
            raise DatasetError(f"masks found but no ImageNetS_categories_im919.txt beside "
                               f"{base}: mask ids cannot be mapped to classes.\n{IMAGENET_S_HELP}")
        super().__init__(items, num_classes=1000, root=base)

    def _sorted_selection(self, images_dir: Path, index: Dict[str, int]):
        pairs = []
        for wnid in sorted((p.name for p in images_dir.iterdir() if p.is_dir()),
                           key=lambda w: index.get(w, 10 ** 6)):
            if wnid in IMAGENET_S_EXCLUDED:
                continue
            if wnid not in index:
                raise DatasetError(f"{images_dir / wnid}: {wnid} is not in LOC_synset_mapping.txt")
            files = _image_files(images_dir / wnid)
            if len(files) >= self.n_per_class:
                pairs += [(p, wnid) for p in files[:self.n_per_class]]
        return pairs

    def _from_csv(self, csv_path: Path, images_dir: Path, index: Dict[str, int]):
        pairs = []
        with open(csv_path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    wnid, name, label = row["imagenet_id"], row["img_name"], int(row["index"])
                except (KeyError, ValueError):
                    raise DatasetError(f"{csv_path}: expected columns imagenet_id, index, cat, "
                                       f"img_name, img_index; got {list(row)}") from None
                if index.get(wnid) != label:
                    raise DatasetError(f"{csv_path}: {wnid} has index {label} in the CSV but "
                                       f"{index.get(wnid)} in LOC_synset_mapping.txt")
                path = images_dir / wnid / (name if Path(name).suffix else f"{name}.JPEG")
                pairs.append((path, wnid))
        return pairs

    def selection(self) -> str:
        if self.from_csv:
            return f"authors' {self.split}_stim_info.csv"
        return f"first {self.n_per_class} per class by sorted file name (no authors' CSV)"


# ----------------------------------------------------------------------------------------------
# CIFAR-100
# ----------------------------------------------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Only what CIFAR-100's pickles hold: builtins and numpy arrays, never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR pickle")


class Cifar100Dataset(ImageDataset):
    """CIFAR-100 test split, first ``n_per_class`` images of each label in test order; classes
    in order of first appearance in the test set (catalogue §3). No masks.

    Args:
        root: folder holding ``cifar-100-python/`` (torchvision's layout).
        download: fetch it with torchvision first (needs internet; only when asked).
    """

    name = "cifar100"

    def __init__(self, root: Path, n_per_class: Optional[int] = 5, download: bool = False):
        root = Path(root).expanduser()
        test_file = root / "cifar-100-python" / "test"
        if download and not test_file.is_file():
            from torchvision.datasets import CIFAR100

            try:
                CIFAR100(str(root), train=False, download=True)
            except (OSError, RuntimeError) as exc:  # offline, a proxy, a full disk
                raise DatasetError(
                    f"could not download CIFAR-100 into {root} ({exc}); without internet, "
                    "copy cifar-100-python/ (from https://www.cs.toronto.edu/~kriz/cifar-100-"
                    "python.tar.gz) there by hand") from None
        if not test_file.is_file():
            raise DatasetError(
                f"{test_file} not found. Expected torchvision's layout ROOT/cifar-100-python/"
                "{test,meta}; get it with torchvision.datasets.CIFAR100(ROOT, train=False, "
                "download=True), or pass --download, from https://www.cs.toronto.edu/~kriz/"
                "cifar-100-python.tar.gz")
        try:
            with open(test_file, "rb") as handle:
                batch = _CifarUnpickler(handle, encoding="bytes").load()
            data, fine = np.asarray(batch[b"data"], dtype=np.uint8), list(batch[b"fine_labels"])
        except Exception as exc:
            raise DatasetError(f"cannot read {test_file} as CIFAR-100 ({exc})") from None
        keep, seen = [], {}
        for idx, label in enumerate(fine):
            seen.setdefault(label, 0)
            if n_per_class is None or seen[label] < n_per_class:
                keep.append((idx, label))
                seen[label] += 1
        first = {label: order for order, label in enumerate(dict.fromkeys(fine))}
        keep.sort(key=lambda pair: (first[pair[1]], pair[0]))
        self.indices = [idx for idx, _ in keep]
        self._labels = [label for _, label in keep]
        self.images = data[self.indices].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.n_per_class = n_per_class
        super().__init__(num_classes=100, root=root)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> List[int]:
        return list(self._labels)

    def item_names(self) -> List[str]:
        return [f"test[{i}]" for i in self.indices]

    def load(self, i: int):
        return Image.fromarray(self.images[i], "RGB"), OK

    def selection(self) -> str:
        return f"first {self.n_per_class} test images per label, classes by first appearance"


# ----------------------------------------------------------------------------------------------
# Toy
# ----------------------------------------------------------------------------------------------
class ToyDataset(ImageDataset):
    """A split of the embedded synthetic dataset (:mod:`vitcls_utils.toy`), with masks."""

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
