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

The store's format is in :mod:`vitcls_utils.store`, its reader in :mod:`vitcls_utils.results`.

A perturbation (:mod:`vitcls_utils.perturb`) is part of the configuration, so a perturbed run has
its own store. Under token removal the arrays keep their full width: a removed token has rank
and top-1 -1 and a NaN logit, and an image that cannot be perturbed (no mask) has pred -1.

Token labels (1 class-labeled, 0 context, -1 prefix token or no mask) come in both rules of
:mod:`vitcls_utils.masks`: aligned with the variant's preprocessing, and the paper's.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _compat
from .data import UNREADABLE, ImageDataset
from .errors import StoreError, VitclsError

_compat.ensure_torchvision_ops()

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from . import __version__  # noqa: E402
from .hooks import block_sites, hooks  # noqa: E402
from .loader import quiet, stimulus_loader, with_progress  # noqa: E402
from .perturb import (AttentionPerturbation, Perturbation, TokenRemoval,  # noqa: E402
                      group_by_length, keeping_tokens)
from .projection import ClassProjector, reduce_logits  # noqa: E402
from .results import Results, find_store, find_stores, open_results  # noqa: E402,F401
from .store import (IMAGE_ARRAYS, KEY_ARRAYS, MASK_ARRAYS, REMOVED,  # noqa: E402,F401
                    TOKEN_ARRAYS, RowWriter, allocate, check_files, check_out_folder, config_for,
                    config_hash,
                    finish_store, read_manifest, read_progress, store_lock, store_path,
                    write_json_atomic)
from .loading import LoadedInfo, TokenLayout  # noqa: E402

DEFAULT_KINDS: Tuple[str, ...] = ("resid_post", "attn_out", "mlp_out")
PRECISIONS = ("fp32", "bf16")
#: images decoded per loader batch under token removal, in batch sizes: more images give fuller
#: batches of equal length
REMOVAL_CHUNK = 4


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
def _loaded_info(model: nn.Module) -> LoadedInfo:
    info = getattr(model, "vitcls_info", None)
    if info is None:
        raise VitclsError("extract() needs a model from vitcls_utils.load_variant (it reads the "
                          "variant's preprocessing and weights id from model.vitcls_info)")
    return info


def store_config(model: nn.Module, dataset: ImageDataset, kinds: Sequence[str],
                 precision: str, perturbation: Optional[Perturbation] = None,
                 key_topk: int = 0) -> dict:
    """:func:`vitcls_utils.store.config_for` of a loaded model."""
    info = _loaded_info(model)
    return config_for(info.variant.key, info.weights_id, repr(info.variant.preprocess), dataset,
                      kinds, precision, perturbation, key_topk)


# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------
def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise VitclsError(f"precision must be one of {PRECISIONS}, not {precision!r}")


class SiteReducer:
    """Forward a batch with hooks that project every site and keep only the reductions.

    Calling it returns, on the model's device, ``rank``/``top1`` int16 and ``true_logit``
    float32 of shape [B, S, N] in ``sites`` order, and ``pred`` int16 [B], the model's own
    top-1. The hooks exist only during the call, so the model stays clean in between.
    """

    def __init__(self, model: nn.Module, sites: Sequence[str], precision: str = "fp32",
                 perturbation: Optional[AttentionPerturbation] = None,
                 key_topk: int = 0) -> None:
        _check_precision(precision)
        self.model = model
        self.key_topk = key_topk
        self.n_blocks = len(model.blocks)
        self.perturbation_hooks = [] if perturbation is None else perturbation.fwd_hooks(model)
        self.sites = list(sites)
        self.device = next(model.parameters()).device
        self.projector = ClassProjector(model).to(self.device)
        self.index = {name: i for i, name in enumerate(self.sites)}
        self.precision = precision
        self._buffers: Dict[str, torch.Tensor] = {}
        self._labels: Optional[torch.Tensor] = None

    def _reduce(self, value: torch.Tensor, name: str) -> None:
        reduced = reduce_logits(self.projector(value), self._labels)
        for key, tensor in reduced.items():
            buffer = self._buffers.get(key)
            if buffer is None:
                shape = (value.shape[0], len(self.sites), value.shape[1])
                buffer = self._buffers[key] = torch.empty(shape, dtype=tensor.dtype,
                                                          device=self.device)
            buffer[:, self.index[name]] = tensor
        return None

    def _top_keys(self, value: torch.Tensor, name: str) -> None:
        """Indices of the ``key_topk`` largest (signed) coefficients of every token."""
        array = "key_mlp" if name.endswith("mlp.hook_pre") else "key_attn"
        coefficients = value.flatten(2)  # hook_z [B, N, H, dh] -> [B, N, d], head-major
        top = coefficients.topk(self.key_topk, dim=-1).indices.to(torch.int16)
        buffer = self._buffers.get(array)
        if buffer is None:
            shape = (value.shape[0], self.n_blocks, value.shape[1], self.key_topk)
            buffer = self._buffers[array] = torch.empty(shape, dtype=torch.int16,
                                                        device=self.device)
        buffer[:, int(name.split(".")[1])] = top
        return None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 kept: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Reductions of one batch; with ``kept`` [B, K] the model runs on those tokens only
        and the token arrays are [B, S, K]."""
        self._labels = labels.to(self.device)
        self._buffers = {}
        with contextlib.ExitStack() as stack:
            if kept is not None:
                stack.enter_context(keeping_tokens(self.model, kept))
            # perturbation hooks first: the reducing hooks then read the edited values
            reducing = [(self.sites, self._reduce)]
            if self.key_topk:
                reducing.append(([f"blocks.{b}.{kind}" for b in range(self.n_blocks)
                                  for kind in KEY_ARRAYS.values()], self._top_keys))
            stack.enter_context(hooks(self.model, self.perturbation_hooks + reducing))
            stack.enter_context(torch.autocast(device_type=self.device.type,
                                               dtype=torch.bfloat16,
                                               enabled=self.precision == "bf16"))
            logits = self.model(images.to(self.device, non_blocking=True))
        out = dict(self._buffers)
        out["pred"] = logits.float().argmax(-1).to(torch.int16)
        return out


def extract(
    model: nn.Module,
    dataset: ImageDataset,
    out: Union[str, Path],
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    batch_size: int = 16,
    num_workers: Optional[int] = None,
    precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
    perturbation: Optional[Perturbation] = None,
    key_topk: int = 0,
    _after_write: Optional[Callable[[int], None]] = None,
) -> Path:
    """Project every token at every requested site of every block and store the reductions.

    Args:
        model: a model from :func:`vitcls_utils.load_variant`, on the device to run on.
        dataset: the stimuli, in a fixed order.
        out: root folder of stores; the store goes to ``<out>/<variant>/<dataset>-<hash>``.
        kinds: site kinds per block, in the order they appear in ``Results.sites``.
        batch_size: images per forward. A resumed run keeps the batch size it started with.
        num_workers: image-decoding workers (default: 0 on CPU, up to 8 on GPU).
        precision: "fp32", or "bf16" (GPU forward in bfloat16; projection stays float32).
        force: recompute even if a complete store exists.
        progress: show a tqdm progress bar.
        perturbation: an :class:`~vitcls_utils.perturb.AttentionPerturbation` or
            :class:`~vitcls_utils.perturb.TokenRemoval` applied during the forward passes.
        key_topk: also store, per block and token, the indices of the ``key_topk`` largest
            MLP and attention key coefficients (chapter 3; 0: none).

    Returns:
        The store folder, readable with :func:`open_results`.
    """
    _check_precision(precision)
    if batch_size < 1:
        raise VitclsError("batch_size must be at least 1")
    removal = perturbation if isinstance(perturbation, TokenRemoval) else None
    if removal is not None and removal.needs_masks and not dataset.has_masks:
        raise VitclsError(f"{removal.name} needs token labels from segmentation masks, and "
                          f"{dataset.name} has none: use --data toy or --data imagenet-s")
    info = _loaded_info(model)
    device = next(model.parameters()).device
    layout = TokenLayout.of(model)
    sites = block_sites(model, kinds)
    if key_topk < 0:
        raise VitclsError("key_topk must be 0 (none) or positive")
    config = store_config(model, dataset, kinds, precision, perturbation, key_topk)
    path = store_path(check_out_folder(out), config)
    n_images = len(dataset)

    with store_lock(path):  # one writer per store; a second waits, then finds it done
        done = _prepare_store(path, config, dataset, force, batch_size, sites=sites, layout=layout,
                              model=model, device=device, key_topk=key_topk)
        manifest = json.loads((path / "manifest.json").read_text())
        batch_size = manifest["batch_size"]
        if done >= n_images:
            if manifest.get("status") != "complete":  # killed after the last row
                finish_store(path, 0.0)
            return path

        per_image = ["status"] + (list(MASK_ARRAYS) if dataset.has_masks else [])
        token_arrays = list(TOKEN_ARRAYS) + (list(KEY_ARRAYS) if key_topk else [])
        writers = {name: RowWriter(path / f"{name}.npy")
                   for name in token_arrays + ["pred"] + per_image}
        loader = stimulus_loader(dataset, info.variant.preprocess, layout,
                                 batch_size * (REMOVAL_CHUNK if removal else 1), start=done,
                                 num_workers=num_workers, device=device)
        started = time.perf_counter()
        bar = tqdm(total=n_images, initial=done, unit="img", disable=quiet(progress),
                   desc=f"extract {info.variant.key}")
        try:
            reducer = SiteReducer(model, sites, precision=precision,
                                  perturbation=None if removal else perturbation, key_topk=key_topk)
            for batch in loader:
                if removal is None:
                    reduced = {k: v.cpu().numpy()
                               for k, v in reducer(batch["image"], batch["label"]).items()}
                else:
                    reduced = _reduce_removed(reducer, batch, removal, layout, batch_size)
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
                write_json_atomic(path / "progress.json", {"done": done})
                bar.update(count)
        finally:
            bar.close()
            for writer in writers.values():
                writer.close()
        finish_store(path, time.perf_counter() - started)
        return path


def _reduce_removed(reducer: SiteReducer, batch: dict, removal: TokenRemoval,
                    layout: TokenLayout, batch_size: int) -> Dict[str, np.ndarray]:
    """One loader batch under token removal: images grouped by kept length, each group run on
    its kept tokens, the results put back at full width (removed tokens filled)."""
    n_images, n_sites = len(batch["label"]), len(reducer.sites)
    out = {key: np.full((n_images, n_sites, layout.n_tokens), REMOVED[key], dtype=dtype)
           for key, dtype in TOKEN_ARRAYS.items()}
    if reducer.key_topk:
        shape = (n_images, reducer.n_blocks, layout.n_tokens, reducer.key_topk)
        out.update({key: np.full(shape, REMOVED[key], dtype=np.int16) for key in KEY_ARRAYS})
    out["pred"] = np.full(n_images, -1, dtype=IMAGE_ARRAYS["pred"])
    labels = batch[removal.label_array].numpy() if removal.needs_masks else None
    kept = [removal.kept(layout, None if labels is None else labels[i]) for i in range(n_images)]
    runnable = [i for i in range(n_images) if kept[i] is not None]
    for group in group_by_length([len(kept[i]) for i in runnable], batch_size):
        members = [runnable[g] for g in group]
        index = torch.from_numpy(np.stack([kept[i] for i in members]))
        reduced = reducer(batch["image"][members], batch["label"][members], kept=index)
        for key, tensor in reduced.items():
            values = tensor.cpu().numpy()
            for row, image in enumerate(members):
                if key == "pred":
                    out[key][image] = values[row]
                else:  # [S or L, K, ...] -> the kept positions of [S or L, N, ...]
                    out[key][image][:, kept[image]] = values[row]
    return out


def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 64,
             num_workers: Optional[int] = None, progress: bool = True) -> Dict[str, float]:
    """Top-1 accuracy of the model's own output on the readable images of ``dataset``."""
    info = _loaded_info(model)
    device = next(model.parameters()).device
    loader = stimulus_loader(dataset, info.variant.preprocess, TokenLayout.of(model),
                             batch_size, num_workers=num_workers, device=device)
    correct = readable = 0
    with torch.inference_mode():
        for batch in with_progress(loader, len(dataset), f"evaluate {info.variant.key}",
                                   progress):
            ok = batch["status"] != UNREADABLE
            pred = model(batch["image"].to(device)).argmax(-1).cpu()
            correct += int(((pred == batch["label"]) & ok).sum())
            readable += int(ok.sum())
    return {"top1": correct / max(readable, 1), "correct": correct, "images": readable,
            "unreadable": len(dataset) - readable}


def _prepare_store(path: Path, config: dict, dataset: ImageDataset, force: bool,
                   batch_size: int, *, sites: List[str], layout: TokenLayout,
                   model: nn.Module, device: torch.device, key_topk: int = 0) -> int:
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
    n_images, shape = len(dataset), (len(dataset), len(sites), layout.n_tokens)
    for name, dtype in TOKEN_ARRAYS.items():
        allocate(path / f"{name}.npy", dtype, shape)
    if key_topk:
        for name in KEY_ARRAYS:
            allocate(path / f"{name}.npy", np.int16,
                      (n_images, len(model.blocks), layout.n_tokens, key_topk))
    for name in ("pred", "status"):
        allocate(path / f"{name}.npy", IMAGE_ARRAYS[name], (n_images,))
    if dataset.has_masks:
        for name, dtype in MASK_ARRAYS.items():
            allocate(path / f"{name}.npy", dtype, (n_images, layout.n_tokens))
    np.save(path / "labels.npy", np.asarray(dataset.labels, dtype=np.int32))
    with open(path / "items.tsv", "w") as handle:
        handle.write("name\tlabel\n")
        for name, label in zip(dataset.item_names(), dataset.labels, strict=True):
            handle.write(f"{name}\t{label}\n")
    info = _loaded_info(model)
    manifest = {
        "config": config,
        "config_hash": config_hash(config),
        "status": "running",
        "batch_size": batch_size,
        "sites": sites,
        "layout": {"num_prefix": layout.num_prefix, "grid": list(layout.grid),
                   "has_cls": layout.has_cls, "n_tokens": layout.n_tokens},
        "num_classes": int(model.num_classes),
        "variant_label": info.variant.label,
        "dataset_root": str(dataset.root) if dataset.root else None,
        "versions": {"vitcls_utils": __version__, "timm": timm.__version__,
                     "torch": torch.__version__, "numpy": np.__version__},
        "device": str(device),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(path / "progress.json", {"done": 0})
    write_json_atomic(manifest_file, manifest)
    return 0


def results_for(variant: str, dataset: str = "toy", data_dir: Optional[str] = None,
                n_per_class: Optional[int] = None, split: Optional[str] = None,
                device: str = "auto", results_dir: Union[str, Path] = "results", seed: int = 0,
                batch_size: int = 64, weights: Optional[str] = None,
                progress: bool = True, kinds: Sequence[str] = DEFAULT_KINDS,
                perturbation: Optional[Perturbation] = None, key_topk: int = 0,
                precision: str = "fp32") -> Results:
    """What a notebook calls: the results of ``variant`` on a dataset, from a complete store
    of the same configuration when there is one, else extracted (loading the model) and stored.
    Parameters are checked first, so a wrong one fails with a message naming the fix.

    The store is looked up before any weights are loaded: with ``weights`` given, the store
    made from that file; for a random-init control, the one of that seed; for published or
    user-supplied weights not given here, the newest store made from any checkpoint of the
    variant (its manifest names which). Only when none exists is the model needed.
    ``kinds``, ``perturbation``, ``key_topk`` and ``precision`` are passed to :func:`extract`.
    """
    from .data import build_dataset
    from .registry import get_variant
    from .loading import load_variant, weights_identity

    spec = get_variant(variant)
    if batch_size < 1:
        raise VitclsError(f"batch_size must be at least 1, not {batch_size}")
    if n_per_class is not None and n_per_class < 1:
        raise VitclsError(f"n_per_class must be at least 1 (or None for the default), "
                          f"not {n_per_class}")
    _check_precision(precision)
    data = build_dataset(dataset, data_dir, num_classes=spec.num_classes,
                         n_per_class=n_per_class, split=split)
    weights_id = weights_identity(variant, weights=weights, seed=seed)
    config = config_for(spec.key, weights_id or "", repr(spec.preprocess), data, kinds,
                        precision, perturbation, key_topk)
    found = find_store(results_dir, config, any_weights=weights_id is None)
    if found is not None:
        return found
    model = load_variant(variant, weights=weights, device=device, seed=seed)
    return open_results(extract(model, data, results_dir, batch_size=batch_size,
                                progress=progress, kinds=kinds, perturbation=perturbation,
                                key_topk=key_topk, precision=precision))
