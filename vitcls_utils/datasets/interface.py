"""The dataset interface every stimulus set implements: an ordered list of (image, label[,
mask]), its fingerprint, its content identity, and the file-backed base that image folders and
ImageNet-S share.

The fingerprint names the stimuli (their names and labels); the content identity says what
their files hold, so that a result made from other pixels under the same names is never
reused. Hashing thousands of JPEGs on every notebook open would cost seconds, so a file's
SHA-256 is taken once and kept with its stamp (size, mtime, inode, ctime, device): in this
process, and in an index file beside the stimulus caches for later ones. A file is hashed again
only when its stamp changed. ctime cannot be set from user space (``touch -r``, a restore, a
rename or an in-place rewrite all move it), so an unchanged stamp means unchanged bytes; a
file changed within the last seconds is always hashed again, as the clock that stamps it is
coarse. Generated stimuli (the toy set) have no files and no content identity: their
generator's version is in their names.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .images import load_image
from .masks import decode_mask

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
MISSING = "missing"  #: the digest of a file that is gone
#: a file whose ctime is this recent may still change within the same clock tick: not kept
RECENT_NS = 2_000_000_000
_DIGESTS: Dict[Tuple, str] = {}  # (path, *stamp) -> sha256, this process


def file_stamp(path: Path) -> Optional[Tuple[int, int, int, int, int]]:
    """(size, mtime_ns, inode, ctime_ns, device) of a file, or None when it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns, stat.st_dev


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digests(paths: Sequence[Path], index: Optional[Path] = None) -> List[str]:
    """SHA-256 of each file (:data:`MISSING` for one that is gone), hashed only where the
    file's stamp differs from the one it had when last hashed, in this process or, with
    ``index`` (a JSON file, rewritten when it learns something), in an earlier one."""
    known = _read_index(index)
    digests, learned, now = [], {}, time.time_ns()
    for path in paths:
        name = os.path.abspath(path)
        stamp = file_stamp(path)
        if stamp is None:
            digests.append(MISSING)
            continue
        entry = known.get(name) if isinstance(known.get(name), dict) else {}
        recorded = entry.get("sha256") if entry.get("stamp") == list(stamp) else None
        recorded = recorded if isinstance(recorded, str) else None
        digest = _DIGESTS.get((name, *stamp)) or recorded or file_sha256(path)
        if now - stamp[3] > RECENT_NS:  # settled: kept for the next look
            _DIGESTS[(name, *stamp)] = digest
            if recorded is None:
                learned[name] = {"stamp": list(stamp), "sha256": digest}
        digests.append(digest)
    if index is not None and learned:
        _write_index(index, {**known, **learned})
    return digests


def _read_index(index: Optional[Path]) -> Dict[str, dict]:
    try:
        files = json.loads(index.read_text()).get("files") if index is not None else None
    except (OSError, ValueError, AttributeError):
        files = None  # absent or damaged: an index only saves hashing
    return files if isinstance(files, dict) else {}


def _write_index(index: Path, files: Dict[str, dict]) -> None:
    tmp = index.with_name(f"{index.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"files": files}))
        os.replace(tmp, index)
    except OSError:  # a full or read-only results folder: the hashes are taken again later
        tmp.unlink(missing_ok=True)


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

    def content_files(self) -> List[Path]:
        """The files the stimuli are read from, in a fixed order (none: generated)."""
        return []

    def digest_index(self) -> Optional[Path]:
        """Where the files' hashes are kept between processes: beside the stimulus caches this
        dataset reads from, one index per dataset folder (None: hashed once per process)."""
        if self.cache_dir is None or self.root is None:
            return None
        root = hashlib.sha256(os.path.abspath(self.root).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / f"files-{self.name}-{root}.json"

    def content_id(self) -> Optional[str]:
        """sha256 of the fingerprint and every content file's SHA-256: what the stimuli hold.
        None for generated stimuli, whose fingerprint says everything."""
        files = self.content_files()
        if not files:
            return None
        digest = hashlib.sha256(self.fingerprint().encode())
        for sha in content_digests(files, self.digest_index()):
            digest.update(f"{sha}\n".encode())
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

    def content_files(self) -> List[Path]:
        """Each image, then its mask where it has one."""
        return [path for item in self.items
                for path in (item.path, item.mask_path) if path is not None]

    def image_digests(self) -> List[str]:
        """The SHA-256 of each image file, in order (what a stimulus cache row was made of)."""
        return content_digests([item.path for item in self.items], self.digest_index())

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
