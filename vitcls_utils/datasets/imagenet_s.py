"""ImageNet-S (ImageNetS919): the paper's stimuli, validation images with segmentation masks,
and the test split the probes train on (catalogue §3)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Optional

from .interface import FileDataset, Item, image_files
from ..base.errors import DatasetError

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
            files = image_files(images_dir / wnid)
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
