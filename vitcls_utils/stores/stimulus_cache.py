"""The preprocessed-stimulus cache: image files decoded, resized and cropped once per geometry,
kept as uint8 pixels, so that a variant's many passes over its stimuli (the main store, the
perturbation stores, probes, maps) decode each JPEG once.

Only the geometry is cached (resize, crop, filter): normalisation is done on reading, with the
same float32 arithmetic as :class:`~vitcls_utils.datasets.preprocess.Preprocess`, so a cached
stimulus is the same tensor to the bit, and variants that share a geometry but not a mean share
a cache. Image files only (folders, ImageNet-S): the toy set is generated and CIFAR is an array
already. Layout, under ``<results>/.stimuli/`` (kept apart from the stores)::

    <dataset>-<geometry>-<fingerprint16>/
        cache.json    dataset, geometry, decoding code, shape; per image its name, status,
                      file content hash and pixel-row checksum
        images.u8     [I, H, W, 3] uint8, row i = image i after resize and crop
    <entry>.partial/  the same while it is written (status.i8 and progress.json say how far)
    files-*.json      the image files' hashes by stamp (:mod:`vitcls_utils.datasets.interface`)

An entry is written under the store lock, in a ``.partial`` folder renamed into place when
complete, so a reader sees a whole cache or none, and an interrupted build resumes. The pixel
file's blocks are reserved before the first image is decoded and rows are written into them
(never through a writable memory map, which a full disk answers with SIGBUS): a disk too small
is a one-line error, and the build resumes once there is room.

What a reader trusts, and what it costs: an entry is used only if it holds every image of its
dataset with the content hash taken at build (a file is hashed again only when its size,
mtime, inode or ctime changed, so a look costs a ``stat`` per file), was made by the same
decoding code (a hash of ``datasets/images.py`` and ``datasets/preprocess.py``) and has a pixel
file of the right size. Each pixel row's checksum is verified as the row is read (150 KB at
224 px: far cheaper than hashing the whole file on every open); a row that does not match is
decoded from its image instead, and ``vitcls cache`` rebuilds the entry. An entry not used is
said on stderr, one line with the reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..base.errors import DamagedStoreError, VitclsError
from ..datasets import images as image_decoding
from ..datasets import preprocess as preprocessing
from ..datasets.interface import FileDataset, ImageDataset
from ..datasets.images import UNREADABLE
from ..datasets.preprocess import Preprocess

CACHE_FORMAT = 2
FOLDER = ".stimuli"
NOT_DONE = -1
PER_IMAGE = ("names", "status", "digests", "rows")  #: per-image lists of a cache.json


def folder_for(results_dir: Union[str, Path]) -> Path:
    """Where the caches of a results folder live."""
    return Path(results_dir) / FOLDER


def use(dataset: ImageDataset, results_dir: Union[str, Path, None]) -> ImageDataset:
    """Let ``dataset`` read its stimuli from the caches of ``results_dir`` (when they hold it),
    unless it reads from other caches already; datasets that are not image files are returned
    as they are. Returns ``dataset``."""
    if results_dir is not None and isinstance(dataset, FileDataset) and dataset.cache_dir is None:
        dataset.cache_dir = folder_for(results_dir)
    return dataset


def geometry_tag(preprocess: Preprocess) -> str:
    """The geometry as a folder name: e.g. ``r256-c224-bicubic`` or ``r224x224-full-bilinear``."""
    resize = (f"r{preprocess.resize}" if isinstance(preprocess.resize, int)
              else "r{}x{}".format(*preprocess.resize))
    crop = f"c{preprocess.crop}" if preprocess.crop is not None else "full"
    return f"{resize}-{crop}-{preprocess.interpolation}"


def entry_name(dataset: ImageDataset, preprocess: Preprocess) -> str:
    return f"{dataset.name}-{geometry_tag(preprocess)}-{dataset.fingerprint()[:16]}"


@lru_cache(maxsize=1)
def decoding_code() -> str:
    """sha256 of the modules that make a row (decoding, resize, crop): what made an entry."""
    digest = hashlib.sha256()
    for module in (image_decoding, preprocessing):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def row_checksum(pixels: np.ndarray) -> str:
    """The checksum of one pixel row, as ``cache.json`` records it."""
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).hexdigest()


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
@dataclass
class CachedStimuli:
    """Rows of one cache entry for the images of a dataset; the pixel file is opened on first
    use, so the object travels to DataLoader workers as a path, not as pixels."""

    path: Path
    shape: tuple
    rows: List[int]
    status: List[int]
    checksums: List[str]
    _pixels: Optional[np.ndarray] = None

    def __getstate__(self):
        return {**self.__dict__, "_pixels": None}

    def pixels(self, index: int) -> Optional[np.ndarray]:
        """Image ``index`` of the dataset after resize and crop ([H, W, 3] uint8), or None for
        an image that could not be read.

        Raises:
            DamagedStoreError: the row does not match the checksum taken when it was cached.
        """
        if self.status[index] == UNREADABLE:
            return None
        if self._pixels is None:
            self._pixels = np.memmap(self.path / "images.u8", dtype=np.uint8, mode="r",
                                     shape=self.shape)
        row = np.array(self._pixels[self.rows[index]])
        if row_checksum(row) != self.checksums[index]:
            raise DamagedStoreError(f"row {self.rows[index]} of {self.path / 'images.u8'} does "
                                    "not match the checksum taken when it was cached")
        return row

    def intact(self) -> bool:
        """Whether every row of the dataset still matches its checksum (reads them all)."""
        try:
            for index in range(len(self.rows)):
                self.pixels(index)
        except DamagedStoreError:
            return False
        return True


@lru_cache(maxsize=16)
def _index(cache_json: Path, mtime_ns: int) -> dict:
    """An entry's ``cache.json`` with a name -> row map; a ValueError saying why it is not
    one that this version reads."""
    try:
        meta = json.loads(cache_json.read_text())
    except (OSError, ValueError):
        raise ValueError("has an unreadable cache.json") from None
    if isinstance(meta, dict) and meta.get("format") not in (None, CACHE_FORMAT):
        raise ValueError(f"was made in cache format {meta['format']}, not {CACHE_FORMAT}")
    lists = [meta.get(key) if isinstance(meta, dict) else None for key in PER_IMAGE]
    if not all(isinstance(v, list) and len(v) == len(lists[0]) for v in lists) or not all(
            isinstance(meta.get(key), kind) for key, kind in
            (("shape", list), ("geometry", dict), ("root", str), ("code", str))):
        raise ValueError("has a damaged cache.json")
    meta["row_of"] = {name: i for i, name in enumerate(meta["names"])}
    return meta


def lookup(dataset: ImageDataset, preprocess: Preprocess,
           warn: bool = True) -> Optional[CachedStimuli]:
    """The cached stimuli of ``dataset`` under ``preprocess``'s geometry, or None (no cache
    folder set, no entry holding every image, or an entry that is stale or damaged: said on
    stderr with ``warn``). The dataset's own entry is looked at first."""
    folder = getattr(dataset, "cache_dir", None)
    if folder is None or not isinstance(dataset, FileDataset) or not Path(folder).is_dir():
        return None
    own = Path(folder) / entry_name(dataset, preprocess) / "cache.json"
    found = sorted(Path(folder).glob(f"{dataset.name}-{geometry_tag(preprocess)}-*/cache.json"),
                   key=lambda path: path != own)
    for cache_json in found:
        try:
            meta = _index(cache_json, cache_json.stat().st_mtime_ns)
            cached = _rows_of(meta, cache_json.parent, dataset, preprocess)
        except OSError:
            continue  # gone since it was listed (a build replacing it)
        except ValueError as why:
            if warn:
                print(f"vitcls: the stimulus cache {cache_json.parent.name} {why}; decoding "
                      "instead (`vitcls cache` rebuilds it)", file=sys.stderr)
            continue
        if cached is not None:
            return cached
    return None


def _rows_of(meta: dict, entry: Path, dataset: FileDataset,
             preprocess: Preprocess) -> Optional[CachedStimuli]:
    """The dataset's rows of one entry; None for an entry of other images or another
    geometry, a ValueError saying why for one that is stale or damaged."""
    rows = [meta["row_of"].get(name) for name in dataset.item_names()]
    if (meta["geometry"] != geometry_of(preprocess) or meta["root"] != root_of(dataset)
            or any(row is None for row in rows)):
        return None
    if meta["code"] != decoding_code():
        raise ValueError("was made by another version of the decoding code")
    if any(meta["digests"][row] != digest for row, digest in zip(rows, dataset.image_digests())):
        raise ValueError("is older than its image files (their contents changed)")
    if not _whole(entry / "images.u8", meta["shape"]):
        raise ValueError("is damaged (its pixel file has the wrong size)")
    return CachedStimuli(entry, tuple(meta["shape"]), rows, [meta["status"][r] for r in rows],
                         [meta["rows"][r] for r in rows])


def _whole(pixels: Path, shape: Sequence[int]) -> bool:
    try:
        return pixels.stat().st_size == int(np.prod(shape))
    except OSError:
        return False


def root_of(dataset: FileDataset) -> str:
    """The dataset's folder as an absolute path: an entry is found from any working directory."""
    return str(Path(dataset.root).resolve()) if dataset.root is not None else ""


def geometry_of(preprocess: Preprocess) -> Dict[str, object]:
    resize = preprocess.resize if isinstance(preprocess.resize, int) else list(preprocess.resize)
    return {"resize": resize, "crop": preprocess.crop, "interpolation": preprocess.interpolation}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def build(dataset: ImageDataset, preprocess: Preprocess, results_dir: Union[str, Path],
          num_workers: Optional[int] = None, batch_size: int = 32, progress: bool = True,
          verify: bool = False, _after_batch=None) -> Optional[Path]:
    """Write the cache entry of ``dataset`` under ``preprocess``'s geometry (resuming one that
    was interrupted, replacing one that is stale or damaged) and return its folder; None for
    datasets that are not image files. Decoding runs in ``num_workers`` processes (default:
    up to 8). With ``verify``, every row of an entry found is read and checked first (as
    ``vitcls cache`` does), and a damaged entry is rebuilt.

    Raises:
        WriteError: the disk is full or read-only; what was written is kept, and building
            again once there is room resumes.
    """
    if not isinstance(dataset, FileDataset):
        return None
    from .format import store_lock, write_errors

    dataset.cache_dir = folder_for(results_dir)
    final = folder_for(results_dir) / entry_name(dataset, preprocess)
    fix = "free some space (or make the folder writable) and build again: it resumes"
    with write_errors(final, fix), store_lock(final, suffix="cache"):
        found = lookup(dataset, preprocess, warn=False)
        if found is not None and (not verify or found.intact()):  # this or a superset's
            return found.path
        partial = final.with_name(final.name + ".partial")
        _fill(dataset, preprocess, partial, num_workers, batch_size, progress, _after_batch)
        if final.exists():  # stale or damaged: replaced by the entry just written
            shutil.rmtree(final)
        os.replace(partial, final)
    _index.cache_clear()
    return final


def _fill(dataset: FileDataset, preprocess: Preprocess, partial: Path,
          num_workers: Optional[int], batch_size: int, progress: bool, after_batch) -> None:
    """Decode the images into ``partial`` from where an earlier build stopped, then write its
    ``cache.json`` (the last file: its presence is what makes the entry complete)."""
    import torch

    from ..base.progress import with_progress
    from .format import reserve

    n = len(dataset)
    height, width = preprocess.output_size
    shape, row_bytes = (n, height, width, 3), height * width * 3
    plan = {"format": CACHE_FORMAT, "code": decoding_code(), "shape": list(shape),
            "fingerprint": dataset.fingerprint(), "digests": dataset.image_digests()}
    digest = hashlib.sha256(json.dumps(plan).encode()).hexdigest()  # what the rows were made of
    partial.mkdir(parents=True, exist_ok=True)
    progress_file = partial / "progress.json"
    try:
        state = json.loads(progress_file.read_text())
    except (OSError, ValueError):
        state = {}
    fresh = not isinstance(state, dict) or state.get("plan") != digest or not all(
        (partial / name).is_file() for name in ("images.u8", "status.i8"))
    if fresh:  # every block reserved before the first image is decoded
        shutil.rmtree(partial)
        partial.mkdir()
        reserve(partial / "images.u8", n * row_bytes)
        reserve(partial / "status.i8", n)
        _write_rows(partial / "status.i8", 0, np.full(n, NOT_DONE, np.int8).tobytes())
    start = 0 if fresh else int(state.get("done", 0))
    loader = torch.utils.data.DataLoader(
        _Geometry(dataset, preprocess, start), batch_size=batch_size, shuffle=False,
        num_workers=min(8, os.cpu_count() or 1) if num_workers is None else num_workers)
    done = start
    for batch in with_progress(loader, n - start, f"cache {partial.stem}", progress):
        count = len(batch["label"])
        _write_rows(partial / "images.u8", done * row_bytes, batch["pixels"].numpy().tobytes())
        _write_rows(partial / "status.i8", done, batch["status"].numpy().astype(np.int8)
                    .tobytes())
        done += count
        _write_json(progress_file, {"plan": digest, "done": done})
        if after_batch is not None:
            after_batch(done)
    pixels = np.memmap(partial / "images.u8", dtype=np.uint8, mode="r", shape=shape)
    meta = {**plan, "dataset": dataset.describe(), "root": root_of(dataset),
            "geometry": geometry_of(preprocess), "names": dataset.item_names(),
            "status": np.fromfile(partial / "status.i8", np.int8).tolist(),
            "rows": [row_checksum(row) for row in pixels]}  # what is on disk, read back
    del pixels
    _write_json(partial / "cache.json", meta)
    progress_file.unlink()
    (partial / "status.i8").unlink()


def _write_rows(path: Path, offset: int, data: bytes) -> None:
    """``data`` at ``offset`` of a reserved file (its blocks exist: no full disk), synced."""
    handle, view = os.open(path, os.O_WRONLY), memoryview(data)
    try:
        while view:  # a short write is continued; a refused one raises
            written = os.pwrite(handle, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(handle)
    finally:
        os.close(handle)


class _Geometry:
    """Rows ``start:`` of a dataset decoded and put through the geometry only (uint8)."""

    def __init__(self, dataset: FileDataset, preprocess: Preprocess, start: int) -> None:
        self.dataset, self.preprocess, self.start = dataset, preprocess, start
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.labels) - self.start

    def __getitem__(self, i: int) -> Dict[str, object]:
        import torch

        image, status = self.dataset.load(self.start + i)
        height, width = self.preprocess.output_size
        pixels = (np.zeros((height, width, 3), np.uint8) if image is None
                  else np.asarray(self.preprocess.geometry(image.convert("RGB"))))
        return {"pixels": torch.from_numpy(np.array(pixels, copy=True)),
                "status": status, "label": self.labels[self.start + i]}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the file it replaces stays as it was
        raise


def warm(parameters: Sequence[Dict[str, object]], log=print) -> List[Path]:
    """Build the caches a set of notebook runs will read: one per distinct dataset, results
    folder and variant geometry among ``parameters`` (the notebooks' parameter dicts), for
    datasets of image files. Returns the entries built or found."""
    from ..datasets.kinds import build_dataset
    from ..model.registry import get_variant

    seen, built = set(), []
    for p in parameters:
        if p.get("dataset", "toy") in ("toy", "cifar100") or not p.get("variant"):
            continue
        spec = get_variant(str(p["variant"]))
        key = (p["dataset"], p.get("data_dir"), p.get("n_per_class"), p.get("results_dir"),
               geometry_tag(spec.preprocess))
        if key in seen:
            continue
        seen.add(key)
        dataset = build_dataset(str(p["dataset"]), p.get("data_dir"), num_classes=spec.classes,
                                n_per_class=p.get("n_per_class"))
        try:
            path = build(dataset, spec.preprocess, p.get("results_dir") or "results",
                         progress=False)
        except OSError as exc:  # a full disk (a WriteError), say: the cache only saves time
            log(f"stimuli not cached ({exc}); the notebooks decode the images instead")
            continue
        if path is not None:
            log(f"stimuli cached: {path}")
            built.append(path)
    return built


def require(dataset: ImageDataset) -> None:
    """An error naming the fix when a dataset cannot be cached at all."""
    if not isinstance(dataset, FileDataset):
        raise VitclsError(f"the stimulus cache holds image files (--data folder or imagenet-s); "
                          f"{dataset.name} is generated or held in memory already")
