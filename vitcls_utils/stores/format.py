"""The extraction store: its on-disk format, configuration, the writer's primitives and the
checks of its files (the reader is :mod:`vitcls_utils.stores.reader`).

Store layout (one folder per variant, dataset and configuration hash)::

    <out>/<variant>/<dataset>-<hash12>/
        manifest.json   configuration, versions, weights id, stimulus fingerprint, counts
        progress.json   {"done": images written}
        items.tsv       relative path and label of every image, in order
        labels.npy pred.npy status.npy                   [I]
        rank.npy top1.npy true_logit.npy                 [I, S, N]
        token_class.npy token_class_paper.npy            [I, N]  (datasets with masks)
        key_mlp.npy key_attn.npy                         [I, L, N, k]  (with key_topk=k)

Rows are written in place at their final position, and the progress file, replaced atomically
after each batch, says how many are done, so an interrupted run resumes exactly. The
configuration (:func:`config_for`) needs no model, so a complete store is found
(:func:`vitcls_utils.stores.reader.find_store`) before any weights are loaded.

Nothing is trusted that was not checked: before a store is resumed or read, every array file's
header (dtype, shape) and size are compared with what the manifest implies
(:func:`check_files`), and a complete store's SHA-256 checksums, recorded when it was finished,
are verified when it is opened (once per process and file version). A mismatch is a
:class:`~vitcls_utils.base.errors.DamagedStoreError` naming the file.

The configuration covers what the arrays depend on: the variant, the weights' identity (a
checkpoint file's hash), the preprocessing, the stimuli (their names and labels and, for
stimuli read from files, the files' contents: :meth:`~vitcls_utils.datasets.interface.
ImageDataset.content_id`), the site kinds and precision. The code that computes the arrays is
declared by :data:`STORE_FORMAT`, which a test holds to a store made earlier.

A full or read-only disk is a :class:`~vitcls_utils.base.errors.WriteError`, never a crash:
the arrays are reserved on disk when the store is created (``posix_fallocate``), so rows are
written into blocks that exist, and every other write replaces its file atomically; what was
there stays whole, and rerunning once there is room resumes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from ..datasets.interface import ImageDataset, file_sha256
from ..base.errors import DamagedStoreError, StoreError, WriteError
from ..datasets.images import CONVERTED, EXIF_IGNORED, UNREADABLE
from ..model.perturbations import Perturbation, perturbation_config

STORE_FORMAT = 1
TOKEN_ARRAYS = {"rank": np.int16, "top1": np.int16, "true_logit": np.float32}
#: top-k key coefficient indices per block: array name -> site kind
KEY_ARRAYS = {"key_mlp": "mlp.hook_pre", "key_attn": "attn.hook_z"}
IMAGE_ARRAYS = {"labels": np.int32, "pred": np.int16, "status": np.int8}
MASK_ARRAYS = {"token_class": np.int8, "token_class_paper": np.int8}
REMOVED = {"rank": -1, "top1": -1, "true_logit": np.nan, "key_mlp": -1,
           "key_attn": -1}  # fill of removed tokens
#: what a failed write says when the disk, not the program, is at fault
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
QUIET_WAITS = "VITCLS_QUIET_WAITS"


@contextlib.contextmanager
def store_lock(path: Path, suffix: str = "") -> Iterator[None]:
    """Hold the store's lock while writing it: a second writer of the same configuration, in
    this process or another, waits and then finds the store complete instead of writing it
    again. The lock file is ``<out>/.locks/<variant>/<store>.lock``, outside the variant's
    folder, so that folder holds stores only. The wait is announced on stderr, except in the
    notebook runner's kernels (``VITCLS_QUIET_WAITS``): a book page shows results, not which
    worker extracted first. ``suffix`` names another lock of the same store (a shard's)."""
    import fcntl

    name = f"{path.name}-{suffix}" if suffix else path.name
    lock = path.parent.parent / ".locks" / path.parent.name / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not os.environ.get(QUIET_WAITS):
                print(f"vitcls: {path.name} is being written by {holder}; waiting for it to "
                      "finish", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_out_folder(out: Union[str, Path], what: str = "the results folder",
                     needed: int = 0) -> Path:
    """``out`` as a folder for stores, made if it does not exist, checked to take a file and
    to have ``needed`` bytes free: a file there, a read-only or full disk are refused with
    the fix, before any work starts."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{what} {out} is a file; it must be a folder (the root of the "
                         "extraction stores), existing or not")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own (not one per pid): threads of one process check the same folder
        handle, probe = tempfile.mkstemp(prefix=".vitcls-write-test.", dir=path)
        os.close(handle)
        os.unlink(probe)
        free = shutil.disk_usage(path).free
    except OSError as error:
        raise WriteError(f"{what} {out} cannot be written ({error.strerror or error}): pick "
                         "a folder you can write to") from None
    if free < needed:
        raise WriteError(f"{what} {out} has {free / 2**20:.1f} MiB free and this needs "
                         f"{needed / 2**20:.1f} MiB: free some space or pick another folder")
    return path


@contextlib.contextmanager
def write_errors(path: Path, fix: str) -> Iterator[None]:
    """A write to ``path`` that the disk refuses (full, read-only, a size limit) as a
    one-line :class:`WriteError` naming ``fix``; other errors pass unchanged."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            raise
        raise WriteError(f"cannot write {path} ({error.strerror}); {fix}") from None


def reserve(path: Path, size: int) -> None:
    """Make ``path`` ``size`` bytes long with its blocks allocated, so that writing into it
    (or a memory map of it) never finds the disk full; an ``OSError`` when it does not fit."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if size:
            os.posix_fallocate(handle, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(handle, size)  # a filesystem that cannot reserve: a sparse file
    finally:
        os.close(handle)


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # a name no other writer uses
    try:
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the file it replaces stays as it was
        raise


def read_npy_header(handle) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open ``.npy`` file, leaving it at the data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(handle)
    raise ValueError(f"unsupported .npy format version {version}")


class RowWriter:
    """Writes rows of a preallocated ``.npy`` file in place, without mapping the whole file."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "r+b")
        shape, _, dtype = read_npy_header(self.handle)
        self.offset = self.handle.tell()
        self.dtype = dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def write(self, start: int, rows: np.ndarray) -> None:
        self.handle.seek(self.offset + start * self.row_bytes)
        self.handle.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def allocate(path: Path, dtype, shape: Tuple[int, ...]) -> None:
    """A ``.npy`` file of its final size, its blocks reserved; rows are filled batch by batch."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                     "fortran_order": False, "shape": tuple(shape)})
        header = handle.tell()
    reserve(path, header + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)


def store_bytes(n_images: int, n_sites: int, n_tokens: int, has_masks: bool = False,
                n_blocks: int = 0, key_topk: int = 0) -> int:
    """The bytes a store's arrays take (headers aside): what creating it reserves."""
    per_token = sum(np.dtype(t).itemsize for t in TOKEN_ARRAYS.values())
    per_image = (n_sites * n_tokens * per_token
                 + sum(np.dtype(t).itemsize for t in IMAGE_ARRAYS.values())
                 + (n_tokens * len(MASK_ARRAYS) if has_masks else 0)
                 + len(KEY_ARRAYS) * n_blocks * n_tokens * key_topk * 2)
    return n_images * per_image


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
def config_for(variant: str, weights_id: str, preprocess: str, dataset: ImageDataset,
               kinds: Sequence[str], precision: str, perturbation: Optional[Perturbation] = None,
               key_topk: int = 0) -> dict:
    """Everything that determines the arrays; its hash names the store folder."""
    config = {
        "format": STORE_FORMAT,
        "variant": variant,
        "weights_id": weights_id,
        "preprocess": preprocess,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(),
                    "num_classes": dataset.num_classes, "n_images": len(dataset),
                    "selection": dataset.selection(), "has_masks": dataset.has_masks},
        "kinds": list(kinds),
        "precision": precision,
    }
    # optional entries are absent, not null, so the hashes of plain stores never change
    content = dataset.content_id()
    if content is not None:  # stimuli read from files: what the files hold
        config["dataset"]["content"] = content
    if perturbation is not None:
        config["perturbation"] = perturbation_config(perturbation)
    if key_topk:
        config["key_topk"] = int(key_topk)
    return config


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def store_path(out: Union[str, Path], config: dict) -> Path:
    """``<out>/<variant>/<dataset>-<hash12>``."""
    return Path(out) / config["variant"] / f"{config['dataset']['name']}-{config_hash(config)[:12]}"



# ----------------------------------------------------------------------------------------------
# Integrity
# ----------------------------------------------------------------------------------------------
def read_json(path: Path, fix: str) -> dict:
    """A store's JSON file, or a :class:`DamagedStoreError` naming it and ``fix``."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedStoreError(f"{path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedStoreError(f"{path} is not readable JSON ({error}); {fix}") from None
    if not isinstance(payload, dict):
        raise DamagedStoreError(f"{path} does not hold a JSON object; {fix}")
    return payload


def read_progress(path: Path, n_images: int, fix: str, file: Optional[Path] = None) -> int:
    """Images done, from ``progress.json`` (or a shard's ``file``), checked to be a count
    between 0 and ``n_images``."""
    file = file or path / "progress.json"
    done = read_json(file, fix).get("done")
    if not isinstance(done, int) or isinstance(done, bool) or not 0 <= done <= n_images:
        raise DamagedStoreError(f"{file} says done={done!r}, not a count of "
                                f"0..{n_images} images; {fix}")
    return done


def expected_files(manifest: dict) -> dict:
    """Every array file the manifest implies: name -> (dtype, shape)."""
    config = manifest["config"]
    n_images, n_sites = config["dataset"]["n_images"], len(manifest["sites"])
    n_tokens = manifest["layout"]["n_tokens"]
    files = {name: (np.dtype(dtype), (n_images, n_sites, n_tokens))
             for name, dtype in TOKEN_ARRAYS.items()}
    files.update({name: (np.dtype(dtype), (n_images,)) for name, dtype in IMAGE_ARRAYS.items()})
    if config["dataset"].get("has_masks"):
        files.update({name: (np.dtype(dtype), (n_images, n_tokens))
                      for name, dtype in MASK_ARRAYS.items()})
    if config.get("key_topk"):
        n_blocks = len({name.split(".")[1] for name in manifest["sites"]})
        files.update({name: (np.dtype(np.int16), (n_images, n_blocks, n_tokens,
                                                  config["key_topk"])) for name in KEY_ARRAYS})
    return {f"{name}.npy": spec for name, spec in files.items()}


def check_files(path: Path, manifest: dict, fix: str) -> None:
    """Each array file's header and size against the manifest (cheap: no data is read)."""
    for name, (dtype, shape) in expected_files(manifest).items():
        file = path / name
        try:
            with open(file, "rb") as handle:
                found_shape, fortran, found_dtype = read_npy_header(handle)
                offset = handle.tell()
        except FileNotFoundError:
            raise DamagedStoreError(f"{file} is missing; {fix}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise DamagedStoreError(f"{file} is not a valid .npy file ({error}); {fix}") from None
        if found_dtype != dtype or tuple(found_shape) != shape or fortran:
            raise DamagedStoreError(f"{file} holds {found_dtype} {tuple(found_shape)}, the "
                                    f"manifest expects {dtype} {shape}; {fix}")
        size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if file.stat().st_size != size:
            raise DamagedStoreError(f"{file} has {file.stat().st_size} bytes, expected {size} "
                                    f"(truncated or overwritten); {fix}")


_VERIFIED: dict = {}  # (file, size, mtime_ns, inode, ctime_ns) -> checksum seen to match


def checksum_matches(file: Path, recorded: str) -> bool:
    """Whether ``file``'s SHA-256 is ``recorded``; hashed once per process and file version
    (its stamp includes the ctime, which no rewrite of the bytes leaves unchanged)."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    if _VERIFIED.get(key) == recorded:
        return True
    if file_sha256(file) != recorded:
        return False
    _VERIFIED[key] = recorded
    return True


def verify_checksums(path: Path, manifest: dict, fix: str) -> None:
    """Each file's SHA-256 against the one recorded when the store was finished."""
    for name, recorded in manifest.get("checksums", {}).items():
        if not checksum_matches(path / name, recorded):
            raise DamagedStoreError(f"{path / name} does not match the checksum recorded when "
                                    f"the store was finished (changed on disk since); {fix}")


def finish_store(path: Path, seconds: float) -> None:
    """Counts and checksums into the manifest and status "complete": idempotent, so a rerun
    after a kill at any moment (even between the last row and this) completes the store."""
    manifest = json.loads((path / "manifest.json").read_text())
    status = np.load(path / "status.npy")
    if (path / "token_class.npy").exists():
        labels = np.load(path / "token_class.npy", mmap_mode="r")
        manifest["counts_masks"] = {"images_without_mask": int((labels.max(axis=1) < 0).sum())}
    names = [line.split("\t")[0] for line in
             (path / "items.tsv").read_text().splitlines()[1:]]
    listed = {"unreadable": UNREADABLE, "converted_to_rgb": CONVERTED,
              "exif_orientation_ignored": EXIF_IGNORED}
    manifest.update({
        "status": "complete",
        "counts": {"images": int(status.size),
                   **{key: int((status == code).sum()) for key, code in listed.items()}},
        # which files, so that a skipped or converted image can be looked at
        "files": {key: [names[i] for i in np.flatnonzero(status == code)]
                  for key, code in listed.items()},
        "seconds_last_run": round(seconds, 3),
        "completed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checksums": {name: file_sha256(path / name)
                      for name in sorted(expected_files(manifest)) + ["items.tsv"]},
    })
    write_json_atomic(path / "manifest.json", manifest)


def read_manifest(path: Path, fix: str) -> dict:
    """``manifest.json``, checked to have the entries the reader and resumer rely on."""
    manifest = read_json(path / "manifest.json", fix)
    try:
        n_images = manifest["config"]["dataset"]["n_images"]
        valid = (isinstance(n_images, int) and n_images >= 0
                 and isinstance(manifest["sites"], list) and bool(manifest["sites"])
                 and isinstance(manifest["layout"]["n_tokens"], int))
    except (KeyError, TypeError):
        valid = False
    if not valid:
        raise DamagedStoreError(f"{path / 'manifest.json'} lacks the configuration, sites or "
                                f"layout a store's manifest has; {fix}")
    return manifest
