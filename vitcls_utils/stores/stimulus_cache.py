"""The preprocessed-stimulus cache: image files decoded, resized and cropped once per geometry,
kept as uint8 pixels, so that a variant's many passes over its stimuli (the main store, the
perturbation stores, probes, maps) decode each JPEG once.

Only the geometry is cached (resize, crop, filter): normalisation is done on reading, with the
same float32 arithmetic as :class:`~vitcls_utils.datasets.preprocess.Preprocess`, so a cached
stimulus is the same tensor to the bit, and variants that share a geometry but not a mean share
a cache. Image files only (folders, ImageNet-S): the toy set is generated and CIFAR is an array
already.

Layout, under ``<results>/.stimuli/`` (kept apart from the stores)::

    <dataset>-<geometry>-<fingerprint16>/
        cache.json    dataset, geometry, shape, and per image its name, status and file stamp
        images.u8     [I, H, W, 3] uint8, row i = image i after resize and crop
    <entry>.partial/  the same while it is written (status.i8 and progress.json say how far)

An entry is written under the store lock (:func:`~vitcls_utils.stores.format.store_lock`), in a
``.partial`` folder renamed into place when complete, so a reader sees a whole cache or none,
and an interrupted build resumes. A reader uses an entry only if it holds every image of its
dataset with the file's size and modification time unchanged; otherwise it decodes.
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
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..datasets.interface import FileDataset, ImageDataset
from ..base.errors import VitclsError
from ..datasets.images import UNREADABLE
from ..datasets.preprocess import Preprocess

CACHE_FORMAT = 1
FOLDER = ".stimuli"
NOT_DONE = -1


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


def stamps(dataset: FileDataset) -> List[Tuple[int, int]]:
    """(size, mtime in ns) of each image file, or (-1, -1) for one that is gone."""
    out = []
    for item in dataset.items:
        try:
            stat = item.path.stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append((-1, -1))
    return out


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
@dataclass
class CachedStimuli:
    """Rows of one cache entry for the images of a dataset; the pixel file is opened on first
    use, so the object travels to DataLoader workers as a path, not as pixels."""

    path: Path
    shape: Tuple[int, int, int, int]
    rows: List[int]
    status: List[int]
    _pixels: Optional[np.ndarray] = None

    def __getstate__(self):
        return {**self.__dict__, "_pixels": None}

    def pixels(self, index: int) -> Optional[np.ndarray]:
        """Image ``index`` of the dataset after resize and crop ([H, W, 3] uint8), or None for
        an image that could not be read."""
        if self.status[index] == UNREADABLE:
            return None
        if self._pixels is None:
            self._pixels = np.memmap(self.path / "images.u8", dtype=np.uint8, mode="r",
                                     shape=self.shape)
        return np.array(self._pixels[self.rows[index]])


@lru_cache(maxsize=16)
def _index(cache_json: Path, mtime_ns: int) -> dict:
    meta = json.loads(cache_json.read_text())
    meta["row_of"] = {name: i for i, name in enumerate(meta["names"])}
    return meta


def lookup(dataset: ImageDataset, preprocess: Preprocess,
           warn: bool = True) -> Optional[CachedStimuli]:
    """The cached stimuli of ``dataset`` under ``preprocess``'s geometry, or None (no cache
    folder set, no entry holding every image, or a file changed since it was cached: said on
    stderr with ``warn``)."""
    folder = getattr(dataset, "cache_dir", None)
    if folder is None or not isinstance(dataset, FileDataset) or not Path(folder).is_dir():
        return None
    names = dataset.item_names()
    current = None
    prefix = f"{dataset.name}-{geometry_tag(preprocess)}-"
    for cache_json in sorted(Path(folder).glob(f"{prefix}*/cache.json")):
        try:
            meta = _index(cache_json, cache_json.stat().st_mtime_ns)
        except (OSError, ValueError):
            continue  # a damaged entry is rebuilt by build(); reading decodes meanwhile
        if meta.get("format") != CACHE_FORMAT or meta["geometry"] != geometry_of(preprocess) \
                or meta["root"] != root_of(dataset):
            continue
        rows = [meta["row_of"].get(name) for name in names]
        if any(row is None for row in rows):
            continue
        current = current or stamps(dataset)
        if any(tuple(meta["stamps"][row]) != stamp for row, stamp in zip(rows, current)):
            if warn:
                print(f"vitcls: the stimulus cache {cache_json.parent.name} is older than its "
                      "image files; decoding instead (`vitcls cache` rebuilds it)",
                      file=sys.stderr)
            continue
        if not _whole(cache_json.parent / "images.u8", meta["shape"]):
            if warn:
                print(f"vitcls: the stimulus cache {cache_json.parent.name} is damaged (its "
                      "pixel file has the wrong size); decoding instead (`vitcls cache` "
                      "rebuilds it)", file=sys.stderr)
            continue
        return CachedStimuli(cache_json.parent, tuple(meta["shape"]), rows,
                             [meta["status"][row] for row in rows])
    return None


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
          _after_batch=None) -> Optional[Path]:
    """Write the cache entry of ``dataset`` under ``preprocess``'s geometry (resuming one that
    was interrupted, replacing one that is stale) and return its folder; None for datasets that
    are not image files. Decoding runs in ``num_workers`` processes (default: up to 8)."""
    if not isinstance(dataset, FileDataset):
        return None
    from .format import store_lock

    dataset.cache_dir = folder_for(results_dir)
    final = folder_for(results_dir) / entry_name(dataset, preprocess)
    with store_lock(final, suffix="cache"):
        found = lookup(dataset, preprocess, warn=False)
        if found is not None:  # this entry, or another that holds every image
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

    n = len(dataset)
    height, width = preprocess.output_size
    shape = (n, height, width, 3)
    plan = {"format": CACHE_FORMAT, "shape": list(shape), "fingerprint": dataset.fingerprint(),
            "stamps": [list(s) for s in stamps(dataset)]}
    digest = hashlib.sha256(json.dumps(plan).encode()).hexdigest()  # what the rows were made of
    partial.mkdir(parents=True, exist_ok=True)
    progress_file = partial / "progress.json"
    try:
        state = json.loads(progress_file.read_text())
    except (OSError, ValueError):
        state = {}
    fresh = state.get("plan") != digest or not all(
        (partial / name).is_file() for name in ("images.u8", "status.i8"))
    mode = "w+" if fresh else "r+"
    pixels = np.memmap(partial / "images.u8", dtype=np.uint8, mode=mode, shape=shape)
    status = np.memmap(partial / "status.i8", dtype=np.int8, mode=mode, shape=(n,))
    start = 0 if fresh else int(state.get("done", 0))
    if fresh:
        status[:] = NOT_DONE
    loader = torch.utils.data.DataLoader(
        _Geometry(dataset, preprocess, start), batch_size=batch_size, shuffle=False,
        num_workers=min(8, os.cpu_count() or 1) if num_workers is None else num_workers)
    done = start
    for batch in with_progress(loader, n - start, f"cache {partial.stem}", progress):
        count = len(batch["label"])
        pixels[done:done + count] = batch["pixels"].numpy()
        status[done:done + count] = batch["status"].numpy()
        done += count
        pixels.flush()
        status.flush()
        _write_json(progress_file, {"plan": digest, "done": done})
        if after_batch is not None:
            after_batch(done)
    meta = {**plan, "dataset": dataset.describe(), "root": root_of(dataset),
            "geometry": geometry_of(preprocess), "names": dataset.item_names(),
            "status": [int(s) for s in status]}
    del pixels
    _write_json(partial / "cache.json", meta)
    progress_file.unlink()
    (partial / "status.i8").unlink()


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
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


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
        except OSError as exc:  # a full disk, say: the cache only saves time, so decode
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
