"""Streaming extraction: dataset -> batched forward with hooks -> every token of every requested
site projected onto class space and reduced on the device -> compact arrays on disk.

Only the reductions leave the device: rank of the true class (int16), top-1 class (int16) and
true-class logit (float32) per (image, site, token), plus the final prediction per image; and,
when asked (``key_topk``), the indices of each token's largest key coefficients per block: MLP
hidden units before the GELU (``mlp.hook_pre``) and attention channels (``attn.hook_z``, the
out-projection's input), never the raw activations. Memory
is O(batch). The store is resumable: rows are written in place at their final position, and a
progress file, replaced atomically after each batch, says how many are done. A run killed at
any point and restarted writes exactly the arrays of an uninterrupted run.

The store's format is in :mod:`vitcls_utils.stores.format`, its reader in
:mod:`vitcls_utils.stores.reader`, the on-device reductions in
:mod:`vitcls_utils.stores.site_reducer`.

A perturbation (:mod:`vitcls_utils.model.perturbations`) is part of the configuration, so a
perturbed run has its own store. Under token removal the arrays keep their full width: a removed
token has rank and top-1 -1 and a NaN logit, and an image that cannot be perturbed (no mask) has
pred -1. The same fill marks the [CLS] column of a ConViT's blocks before its [CLS] exists.

Token labels (1 class-labeled, 0 context, -1 prefix token or no mask) come in both rules of
:mod:`vitcls_utils.datasets.masks`: aligned with the variant's preprocessing, and the paper's.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _compat
from ..datasets.kinds import ImageDataset
from ..base.errors import StoreError, VitclsError

_compat.ensure_torchvision_ops()

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from .. import __version__  # noqa: E402
from ..model.families import require  # noqa: E402
from ..model.hooks import block_sites  # noqa: E402
from ..model.stages import block_names  # noqa: E402
from .stimulus_loader import stimulus_loader  # noqa: E402
from ..base.progress import quiet  # noqa: E402
from . import stimulus_cache  # noqa: E402
from ..model.perturbations import Perturbation, TokenRemoval  # noqa: E402
from .site_reducer import SiteReducer, check_precision, reduce_removed  # noqa: E402
from .reader import (Store, existing_store, find_store, find_stores,  # noqa: E402,F401
                     open_store)
from .format import (IMAGE_ARRAYS, KEY_ARRAYS, MASK_ARRAYS,  # noqa: E402,F401
                     TOKEN_ARRAYS, RowWriter, allocate, check_files, check_out_folder, config_for,
                     config_hash, expected_files,
                     finish_store, read_manifest, read_progress, store_lock, store_path,
                     write_errors, write_json_atomic)
from .shards import (Shard, check_shard, disagreement, lock_suffix,  # noqa: E402
                     missing_shards, progress_file, shard_rows)
from ..model.loading import loaded_info  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402
from ..model.projection import no_tokens_message  # noqa: E402
from ..model.registry import VariantLike  # noqa: E402
from .batch_size import resolve_batch_size  # noqa: E402

DEFAULT_KINDS: Tuple[str, ...] = ("resid_post", "attn_out", "mlp_out")
#: images decoded per loader batch under token removal, in batch sizes: more images give fuller
#: batches of equal length
REMOVAL_CHUNK = 4
#: what a store that the disk refused says to do
RESUME = "free some space (or make the folder writable) and rerun: the store resumes"


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
def store_config(model: nn.Module, dataset: ImageDataset, kinds: Sequence[str],
                 precision: str, perturbation: Optional[Perturbation] = None,
                 key_topk: int = 0) -> dict:
    """:func:`vitcls_utils.stores.format.config_for` of a loaded model."""
    info = loaded_info(model)
    return config_for(info.variant.key, info.weights_id, repr(info.variant.preprocess), dataset,
                      kinds, precision, perturbation, key_topk)


# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------
def extract(
    model: nn.Module,
    dataset: ImageDataset,
    out: Union[str, Path],
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    batch_size: Union[int, str] = 16,
    num_workers: Optional[int] = None,
    precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
    perturbation: Optional[Perturbation] = None,
    key_topk: int = 0,
    shard: Optional[Shard] = None,
    _after_write: Optional[Callable[[int], None]] = None,
) -> Path:
    """Project every token at every requested site of every block and store the reductions.

    Args: model: a model from :func:`vitcls_utils.load_variant`, on the device to run on.
        dataset: the stimuli, in a fixed order; read from ``out``'s stimulus cache where it
        holds them (:mod:`vitcls_utils.stores.stimulus_cache`: the same tensors, decoded once).
        out: root folder of stores; the store goes to ``<out>/<variant>/<dataset>-<hash>``.
        kinds: site kinds per block, in the order they appear in ``Store.sites``. batch_size:
        images per forward, or "auto": the largest that fits the GPU
        (:mod:`vitcls_utils.stores.batch_size`). A resumed run keeps the batch size it started
        with. num_workers: image-decoding workers (default: 0 on CPU, up to 8 on GPU).
        precision: "fp32", or "bf16" (GPU forward in bfloat16; projection stays float32). force:
        recompute even if a complete store exists. progress: show a tqdm progress bar.
        perturbation: an :class:`~vitcls_utils.model.perturbations.AttentionPerturbation` or
        :class:`~vitcls_utils.model.perturbations.TokenRemoval` applied during the forward
        passes. key_topk: also store, per block and token, the indices of the ``key_topk``
        largest MLP and attention key coefficients (chapter 3; 0: none). shard: (i, n): fill
        only the i-th of n shards of the store's rows, so that n processes write one store
        together (:mod:`vitcls_utils.stores.shards`); the store is complete when the last of
        them ends, and equal to one process's.

    Returns:
        The store folder, readable with :func:`open_store`.
    """
    check_precision(precision)
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise VitclsError(f"batch_size must be at least 1 (or 'auto'), not {batch_size!r}")
    removal = perturbation if isinstance(perturbation, TokenRemoval) else None
    if removal is not None and removal.needs_masks and not dataset.has_masks:
        raise VitclsError(f"{removal.name} needs token labels from segmentation masks, and "
                          f"{dataset.name} has none: use --data toy or --data imagenet-s")
    variant = loaded_info(model).variant  # a model of load_variant, or an error that says so
    if not variant.is_vit:
        raise VitclsError(no_tokens_message(variant.key))
    if key_topk:  # key indices are kept for every block: not on a stage-wise model (Swin)
        require(model, "every_block", "key indices per block (key_topk)")
    device = next(model.parameters()).device
    layout = TokenLayout.of(model)
    if perturbation is not None:
        layout.require_prefix_throughout(f"the perturbation {perturbation.name}")
    sites = block_sites(model, kinds)
    batch_size = resolve_batch_size(batch_size, model, sites, precision)
    if key_topk < 0:
        raise VitclsError("key_topk must be 0 (none) or positive")
    stimulus_cache.use(dataset, out)  # decoded stimuli of `vitcls cache`, where there are some
    config = store_config(model, dataset, kinds, precision, perturbation, key_topk)
    path = store_path(check_out_folder(out), config)
    n_images = len(dataset)

    fill = dict(layout=layout, sites=sites, removal=removal, perturbation=perturbation,
                precision=precision, key_topk=key_topk, num_workers=num_workers,
                progress=progress, _after_write=_after_write)
    with write_errors(path, RESUME):  # a full or read-only disk: one line, the store kept
        if shard is not None:
            return _extract_shard(model, dataset, path, config, check_shard(shard), batch_size,
                                  force, fill)
        with store_lock(path):  # one writer per store; a second waits, then finds it done
            done = _prepare_store(path, config, dataset, force, batch_size, sites=sites,
                                  layout=layout, model=model, device=device)
            manifest = json.loads((path / "manifest.json").read_text())
            if manifest.get("shards") and manifest.get("status") != "complete":
                raise StoreError(f"{path} was started as {manifest['shards']} shards: run the "
                                 "missing ones with --shard i/n, or start over with --force")
            if done < n_images:
                seconds = _fill(path, model, dataset, (done, n_images), progress_file(path, None),
                                batch_size=manifest["batch_size"], **fill)
                finish_store(path, seconds)
            elif manifest.get("status") != "complete":  # killed after the last row
                finish_store(path, 0.0)
            return path


def _extract_shard(model: nn.Module, dataset: ImageDataset, path: Path, config: dict,
                   shard: Shard, batch_size: int, force: bool, fill: dict) -> Path:
    """One shard of a store (:mod:`vitcls_utils.stores.shards`): the store created (or checked)
    under its lock, the shard's rows written under the shard's own lock, and the store finished
    by whichever shard completes it."""
    if force:
        raise VitclsError("--force with --shard would let one shard delete the others' rows: "
                          "delete the store once, then run the shards")
    n_images = len(dataset)
    with store_lock(path):
        _prepare_store(path, config, dataset, False, batch_size, sites=fill["sites"],
                       layout=fill["layout"], model=model,
                       device=next(model.parameters()).device, shards=shard[1])
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("status") == "complete":
            return path
        if manifest.get("shards") != shard[1]:
            raise StoreError(f"{path} was started as {manifest.get('shards') or 'one process'}"
                             f", not {shard[1]} shards: run it that way, or start over with "
                             "--force (without --shard)")
    unit = manifest["batch_size"] * (REMOVAL_CHUNK if fill["removal"] else 1)
    start, stop = shard_rows(n_images, unit, shard)
    seconds = 0.0
    with store_lock(path, lock_suffix(shard)):
        file = progress_file(path, shard)
        done = read_progress(path, n_images, "delete the store and run every shard again",
                             file) if file.exists() else start
        if not start <= done <= stop:
            raise StoreError(f"{file} says done={done}, outside the shard's rows "
                             f"{start}..{stop}; delete the store and run every shard again")
        if done < stop:
            seconds = _fill(path, model, dataset, (done, stop), file,
                            batch_size=manifest["batch_size"], **fill)
        else:
            write_json_atomic(file, {"done": stop})
    with store_lock(path):
        manifest = json.loads((path / "manifest.json").read_text())
        missing = missing_shards(path, n_images, unit, shard[1])
        if manifest.get("status") != "complete" and not missing:
            write_json_atomic(path / "progress.json", {"done": n_images})  # as one process's
            finish_store(path, seconds)
    conflict = disagreement(path, config, shard[1], missing) if missing else None
    if conflict:
        raise StoreError(f"{path} waits for shard(s) {', '.join(map(str, missing))} of "
                         f"{shard[1]}, and {conflict}")
    return path


def _fill(path: Path, model: nn.Module, dataset: ImageDataset, rows: Tuple[int, int],
          progress_path: Path, *, layout: TokenLayout, sites: List[str],
          removal: Optional[TokenRemoval], perturbation: Optional[Perturbation],
          precision: str, key_topk: int, batch_size: int, num_workers: Optional[int],
          progress: bool, _after_write: Optional[Callable[[int], None]]) -> float:
    """Rows ``rows`` = [done, stop) of the store, batch by batch, each batch's rows synced before
    ``progress_path`` says they are done. Returns the seconds it took."""
    info = loaded_info(model)
    done, stop = rows
    per_image = ["status"] + (list(MASK_ARRAYS) if dataset.has_masks else [])
    token_arrays = list(TOKEN_ARRAYS) + (list(KEY_ARRAYS) if key_topk else [])
    writers = {name: RowWriter(path / f"{name}.npy")
               for name in token_arrays + ["pred"] + per_image}
    loader = stimulus_loader(dataset, info.variant.preprocess, layout,
                             batch_size * (REMOVAL_CHUNK if removal else 1), start=done,
                             stop=stop, num_workers=num_workers,
                             device=next(model.parameters()).device)
    started = time.perf_counter()
    bar = tqdm(total=stop, initial=done, unit="img", disable=quiet(progress),
               desc=f"extract {info.variant.key}")
    try:
        reducer = SiteReducer(model, sites, precision=precision,
                              perturbation=None if removal else perturbation, key_topk=key_topk)
        for batch in loader:
            if removal is None:
                reduced = {k: v.cpu().numpy()
                           for k, v in reducer(batch["image"], batch["label"]).items()}
            else:
                reduced = reduce_removed(reducer, batch, removal, layout, batch_size)
            for key, array in reduced.items():
                writers[key].write(done, array)
            for key in per_image:
                writers[key].write(done, batch[key].numpy())
            for writer in writers.values():
                writer.sync()
            count = batch["label"].shape[0]
            if _after_write is not None:
                _after_write(done + count)
            done += count
            write_json_atomic(progress_path, {"done": done})
            bar.update(count)
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    return time.perf_counter() - started


def _prepare_store(path: Path, config: dict, dataset: ImageDataset, force: bool,
                   batch_size: int, *, sites: List[str], layout: TokenLayout,
                   model: nn.Module, device: torch.device,
                   shards: Optional[int] = None) -> int:
    """Create the store, or find how far an earlier run got. Returns images already done."""
    manifest_file = path / "manifest.json"
    if manifest_file.exists() and not force:
        fix = (f"the store cannot be resumed: rerun with --force (force=True) to start it "
               f"over, or delete {path}")
        manifest = read_manifest(path, fix)
        if manifest.get("config") != config:
            raise StoreError(f"{path} holds another configuration; delete it or use force")
        done = read_progress(path, len(dataset), fix)
        check_files(path, manifest, fix)  # a truncated or garbage file is never resumed
        return done
    if path.exists():
        for old in path.iterdir():
            old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    info = loaded_info(model)
    manifest = {
        "config": config,
        "config_hash": config_hash(config),
        "status": "running",
        "batch_size": batch_size,
        "shards": shards,
        "sites": sites,
        "block_names": block_names(model),  # a Swin's store: its last stage ("stage 4, ...")
        "layout": {"num_prefix": layout.num_prefix, "grid": list(layout.grid),
                   "has_cls": layout.has_cls, "n_tokens": layout.n_tokens,
                   "prefix_from": layout.prefix_from},
        "num_classes": int(model.num_classes),
        "variant_label": info.variant.label,
        "dataset_root": str(dataset.root) if dataset.root else None,
        "versions": {"vitcls_utils": __version__, "timm": timm.__version__,
                     "torch": torch.__version__, "numpy": np.__version__},
        "device": str(device),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:  # every array's blocks reserved first: a disk too small fails here, not mid-run
        for name, (dtype, shape) in expected_files(manifest).items():
            if name != "labels.npy":
                allocate(path / name, dtype, shape)
    except OSError:
        shutil.rmtree(path)  # a new store: its space goes back, and a rerun starts it again
        raise
    np.save(path / "labels.npy", np.asarray(dataset.labels, dtype=np.int32))
    with open(path / "items.tsv", "w") as handle:
        handle.write("name\tlabel\n")
        for name, label in zip(dataset.item_names(), dataset.labels, strict=True):
            handle.write(f"{name}\t{label}\n")
    write_json_atomic(path / "progress.json", {"done": 0})
    write_json_atomic(manifest_file, manifest)
    return 0


def store_for(variant: VariantLike, dataset: str = "toy", data_dir: Optional[str] = None,
                n_per_class: Optional[int] = None, split: Optional[str] = None,
                device: str = "auto", results_dir: Union[str, Path] = "results", seed: int = 0,
                batch_size: int = 64, weights: Optional[str] = None,
                progress: bool = True, kinds: Sequence[str] = DEFAULT_KINDS,
                perturbation: Optional[Perturbation] = None, key_topk: int = 0,
                precision: str = "fp32") -> Store:
    """What a notebook calls: the results of ``variant`` on a dataset, from a complete store
    of the same configuration when there is one, else extracted (loading the model) and stored.
    Parameters are checked first, so a wrong one fails with a message naming the fix.

    The store is looked up before any weights are loaded: with ``weights`` given, the store
    made from that file; for a random-init control, the one of that seed; for published or
    user-supplied weights not given here, the newest store made from any checkpoint of the
    variant (its manifest names which). Only when none exists is the model needed.

    Args:
        variant: registry key or row (``vitcls variants``).
        dataset: dataset kind: ``toy``, ``imagenet-s``, ``cifar100`` or ``folder``.
        data_dir: the dataset's root folder (not needed for ``toy``).
        n_per_class: images per class (None: the dataset's default).
        split: the dataset's split (None: its default, e.g. the toy's ``val``).
        device: "auto", "cpu", "cuda", ... (used only when extracting).
        results_dir: the root folder of stores.
        seed: seed of a random-init control.
        batch_size: images per forward when extracting.
        weights: a checkpoint file (None: the published or shipped weights).
        progress: show a progress bar when extracting.
        kinds, perturbation, key_topk, precision: as for :func:`extract`.

    Returns:
        The :class:`~vitcls_utils.stores.reader.Store`: ``rank``, ``top1``, ``true_logit``
        [images, sites, tokens] and the rest that :func:`~vitcls_utils.stores.reader.open_store`
        reads.

    Raises:
        NoClassHeadError: the variant has no class head (use the few-shot probe).
        VitclsError: a parameter out of range, with the fix.
    """
    from ..base.errors import NoClassHeadError
    from ..datasets.kinds import build_dataset
    from ..model.loading import load_variant
    from ..model.projection import no_head_message
    from ..model.registry import variant_for_data

    spec = variant_for_data(variant, dataset, say=print if progress else None)  # resolved once
    if not spec.has_head:
        raise NoClassHeadError(no_head_message(spec.key))
    if batch_size < 1:
        raise VitclsError(f"batch_size must be at least 1, not {batch_size}")
    if n_per_class is not None and n_per_class < 1:
        raise VitclsError(f"n_per_class must be at least 1 (or None for the default), "
                          f"not {n_per_class}")
    check_precision(precision)
    data = build_dataset(dataset, data_dir, num_classes=spec.classes,
                         n_per_class=n_per_class, split=split)
    found = existing_store(spec, data, results_dir, kinds, weights, seed, precision,
                           perturbation, key_topk, say_why=True)
    if found is not None:
        return found
    check_out_folder(results_dir)  # writable, before the weights load
    model = load_variant(spec, weights=weights, device=device, seed=seed)
    return open_store(extract(model, data, results_dir, batch_size=batch_size,
                                progress=progress, kinds=kinds, perturbation=perturbation,
                                key_topk=key_topk, precision=precision))
