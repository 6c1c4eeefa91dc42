"""Reading extraction stores: :class:`Store` (the arrays of one store, memory-mapped, checked
against the manifest and its checksums first), finding the stores a notebook needs, and the
room a new one will take (checked before its model loads)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..base.errors import IncompleteStoreError, StoreError
from ..datasets.images import UNREADABLE
from ..model.perturbations import Perturbation, perturbation_config
from ..model.registry import VariantLike
from ..base.sites import positions_of_kind
from . import stimulus_cache
from .format import (IMAGE_ARRAYS, KEY_ARRAYS, MASK_ARRAYS, TOKEN_ARRAYS, check_files,
                     config_for, read_manifest, read_progress, store_bytes, store_path,
                     verify_checksums)


@dataclass
class Store:
    """An extraction store, read back. Token arrays are [I, S, N] in ``sites`` order;
    ``token_class``/``token_class_paper`` [I, N] are there for datasets with masks, and
    ``key_mlp``/``key_attn`` [I, L, N, k] for stores made with ``key_topk``.

    Images that could not be decoded are left out unless ``open_store(include_unreadable=
    True)``; ``n_unreadable`` counts them, and ``image_index`` gives each row's position in
    the dataset.
    """

    path: Path
    manifest: dict
    sites: List[str]
    labels: np.ndarray
    pred: np.ndarray
    status: np.ndarray
    rank: np.ndarray
    top1: np.ndarray
    true_logit: np.ndarray
    n_unreadable: int = 0
    token_class: Optional[np.ndarray] = None
    token_class_paper: Optional[np.ndarray] = None
    key_mlp: Optional[np.ndarray] = None
    key_attn: Optional[np.ndarray] = None
    image_index: Optional[np.ndarray] = None  # dataset position of each row

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def variant(self) -> str:
        return self.manifest["config"]["variant"]

    @property
    def perturbation(self) -> Optional[dict]:
        """The perturbation configuration of the run (None when unperturbed)."""
        return self.manifest["config"].get("perturbation")

    @property
    def has_cls(self) -> bool:
        return bool(self.manifest["layout"]["has_cls"])

    @property
    def num_prefix(self) -> int:
        return int(self.manifest["layout"]["num_prefix"])

    @property
    def n_blocks(self) -> int:
        return len(self.block_numbers)

    @property
    def block_numbers(self) -> List[int]:
        """The stored blocks' own 1-based numbers (``blocks.{i}``: 1..L for a ViT, a Swin's
        last stage counted across stages); the analyses' ``block`` columns use them."""
        return sorted({int(n.split(".")[1]) + 1 for n in self.sites if n.startswith("blocks.")})

    @property
    def block_names(self) -> List[str]:
        """What the stored blocks are ("block 3", "stage 4, block 1"), in block order."""
        return self.manifest.get("block_names") or [f"block {n}" for n in self.block_numbers]

    def site_indices(self, kind: str) -> List[int]:
        """Positions in ``sites`` of one kind ("resid_post", "attn_out", ...), block order."""
        found = positions_of_kind(self.sites, kind)
        if not found:
            raise StoreError(f"no {kind!r} sites in {self.path}; it has {self.sites[:3]}...")
        return found

    def by_block(self, array: str, kind: str) -> np.ndarray:
        """``array`` ("rank", "top1", "true_logit") at one site kind: [I, L, N]."""
        return np.asarray(getattr(self, array)[:, self.site_indices(kind)])

    @property
    def prefix_from(self) -> int:
        """First block whose tokens include the prefix (a ConViT's [CLS] joins late)."""
        return int(self.manifest["layout"].get("prefix_from", 0))

    def identifiability(self, kind: str = "resid_post") -> np.ndarray:
        """1 - rank/C at one site kind: [I, L, N], float32; NaN where a token is absent (removed,
        or a ConViT's [CLS] before it exists)."""
        rank = self.by_block("rank", kind)
        return np.where(rank < 0, np.float32(np.nan),
                        1.0 - rank.astype(np.float32) / self.num_classes)

    def check_source(self, model=None, stimuli=None, class_names=None, memories=None) -> None:
        """Refuse what this store was not made from (whatever is given): a model of another
        variant or weights, other stimuli (names, labels or file contents), class names of
        another count, or value projections (:class:`~vitcls_utils.analysis.memories.Memories`)
        of another shape: other blocks or classes, or fewer memories than its key indices name.
        Reading a store beside a model or images it was not made from gives numbers of
        neither, without an error of its own.

        Raises:
            StoreError: the first mismatch, with the fix.
        """
        config = self.manifest["config"]
        if class_names is not None and len(class_names) != self.num_classes:
            raise StoreError(f"{len(class_names)} class names for a store of {self.num_classes}"
                             f" classes ({self.path}): pass one name per class of its model")
        if model is not None:
            from ..model.loading import loaded_info

            info = loaded_info(model)
            if (info.variant.key, info.weights_id) != (self.variant, config["weights_id"]):
                raise StoreError(f"the model is {info.variant.key} ({info.weights_id}), the "
                                 f"store {self.path} was made by {self.variant} "
                                 f"({config['weights_id']}): pass the model it was made with")
        if memories is not None:
            self._check_memories(memories)
        made = config["dataset"]
        if stimuli is not None and (stimuli.fingerprint() != made["fingerprint"]
                                    or stimuli.content_id() != made.get("content")):
            raise StoreError(f"the stimuli ({stimuli.name}: {stimuli.selection()}) are not the "
                             f"ones {self.path} was made from ({made['name']}: "
                             f"{made['selection']}), or their files changed since: pass the "
                             "dataset it was made from")

    def _check_memories(self, memories) -> None:
        widths = {layer: memories.projection[layer][0].shape[1] for layer in ("mlp", "attn")}
        used = {"mlp": self.key_mlp, "attn": self.key_attn}
        if (memories.n_blocks, memories.projection["mlp"][0].shape[0]) != (
                self.n_blocks, self.num_classes) or any(
                used[k] is not None and int(np.max(used[k])) >= widths[k] for k in widths):
            raise StoreError(f"these memories ({memories.n_blocks} blocks, {widths} memories) "
                             f"are not of the model {self.path} was made by: pass "
                             f"memories_for({self.variant!r})")

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy of the model's own output on the readable images (under token
        removal: on the images that could be run)."""
        ran = self.pred >= 0
        return float((self.pred[ran] == self.labels[ran]).mean())


def open_store(path: Union[str, Path], include_unreadable: bool = False) -> Store:
    """Read an extraction store written by :func:`vitcls_utils.stores.extraction.extract`, its
    arrays memory-mapped, after checking every file against the manifest and its checksums.

    Args:
        path: the store's folder (``<results>/<variant>/<dataset>-<hash>``).
        include_unreadable: keep the rows of images that could not be decoded (their values
            are meaningless; for inspecting a store, not for metrics).

    Returns:
        The :class:`Store`: ``rank``, ``top1``, ``true_logit`` [images, sites, tokens],
        ``labels`` and ``pred`` [images], token labels [images, tokens] where the dataset has
        masks, and the manifest.

    Raises:
        StoreError: not a store; IncompleteStoreError: still being written;
        DamagedStoreError: a file does not match its manifest or checksum.
    """
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise StoreError(f"{path} is not an extraction store (no manifest.json); "
                         "create one with `vitcls extract` or "
                         "vitcls_utils.stores.extraction.extract")
    fix = (f"the store cannot be read: delete {path} and rerun the extraction (or run it "
           "again with --force / force=True)")
    manifest = read_manifest(path, fix)
    n_images = manifest["config"]["dataset"]["n_images"]
    done = read_progress(path, n_images, fix)
    if manifest.get("status") != "complete" or done < n_images:
        raise IncompleteStoreError(f"{path} is incomplete ({done}/{n_images} images); rerun "
                                   "the same extraction to resume it")
    check_files(path, manifest, fix)
    verify_checksums(path, manifest, fix)
    names = list(TOKEN_ARRAYS) + list(IMAGE_ARRAYS)
    names += [name for name in list(MASK_ARRAYS) + list(KEY_ARRAYS)
              if (path / f"{name}.npy").exists()]
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in names}
    keep = arrays["status"] != UNREADABLE
    n_unreadable = int((~keep).sum())
    image_index = np.arange(keep.size)
    if n_unreadable and not include_unreadable:
        arrays = {name: np.asarray(a)[keep] for name, a in arrays.items()}
        image_index = image_index[keep]
    return Store(path=path, manifest=manifest, sites=list(manifest["sites"]),
                   n_unreadable=n_unreadable, image_index=image_index, **arrays)


def _complete_manifests(paths) -> List[tuple]:
    """(store folder, manifest) of the complete stores among ``paths`` (manifest files),
    read without opening their arrays: stores are filtered on their manifests, and only the
    ones chosen are opened (and checksummed). A manifest that is not readable is reported."""
    found = []
    for manifest_file in paths:
        folder = manifest_file.parent
        manifest = read_manifest(folder, f"delete {folder} or rerun its extraction with --force")
        if manifest.get("status") == "complete":
            found.append((folder, manifest))
    return found


def _newest_first(entries: List[tuple]) -> List[tuple]:
    return sorted(entries, key=lambda e: (e[1]["config"]["variant"], e[1].get("completed", "")),
                  reverse=True)


def find_stores(results_dir: Union[str, Path], dataset: Optional[str] = None,
                perturbation: Optional[Perturbation] = None) -> List[Store]:
    """Every complete store under ``results_dir`` (optionally of one dataset kind) made with
    ``perturbation`` (default: unperturbed runs only), newest first within each variant; what
    the cross-variant comparisons read.

    Args:
        results_dir: the root folder of stores.
        dataset: only stores made on this dataset kind (``toy``, ``imagenet-s``, ...).
        perturbation: only stores made under this perturbation (None: unperturbed).

    Returns:
        The opened stores, a list of :class:`Store`.
    """
    wanted = perturbation_config(perturbation)
    entries = [(folder, m) for folder, m in
               _complete_manifests(sorted(Path(results_dir).glob("*/*/manifest.json")))
               if m["config"].get("perturbation") == wanted
               and (dataset is None or m["config"]["dataset"]["name"] == dataset)]
    return [open_store(folder) for folder, _ in _newest_first(entries)]


def find_store(results_dir: Union[str, Path], config: dict,
               any_weights: bool = False) -> Optional[Store]:
    """The complete store made with ``config``, or None. With ``any_weights`` the weights'
    identity is not compared: the newest complete store of the same variant, stimuli and
    settings is taken, whatever checkpoint it was made from (its manifest names it)."""
    if not any_weights:
        path = store_path(results_dir, config)
        try:
            return open_store(path) if (path / "manifest.json").is_file() else None
        except IncompleteStoreError:
            return None
    wanted = {k: v for k, v in config.items() if k != "weights_id"}
    folder = Path(results_dir) / config["variant"]
    entries = [(path, m) for path, m in _complete_manifests(
                   folder.glob(f"{config['dataset']['name']}-*/manifest.json"))
               if {k: v for k, v in m["config"].items() if k != "weights_id"} == wanted
               and not m["config"]["weights_id"].startswith("random-init")]
    return open_store(_newest_first(entries)[0][0]) if entries else None


def existing_store(variant: VariantLike, data, results_dir: Union[str, Path],
                   kinds: Sequence[str],
                   weights: Optional[str] = None, seed: int = 0, precision: str = "fp32",
                   perturbation: Optional[Perturbation] = None,
                   key_topk: int = 0, say_why: bool = False) -> Optional[Store]:
    """The complete store that ``extraction.store_for`` would return without extracting, or None:
    found from the configuration alone (``data``: the stimuli), with no weights loaded. With
    ``say_why``, a store of the variant on these stimuli that cannot be reused is named on
    stderr with the settings that differ (:func:`why_not_reused`)."""
    from ..model.loading import weights_identity
    from ..model.registry import get_variant

    spec = get_variant(variant)
    weights_id = weights_identity(spec, weights=weights, seed=seed)
    stimulus_cache.use(data, results_dir)  # the files' hashes kept beside the caches
    config = config_for(spec.key, weights_id or "", repr(spec.preprocess), data, kinds,
                        precision, perturbation, key_topk)
    found = find_store(results_dir, config, any_weights=weights_id is None)
    why = why_not_reused(results_dir, config) if found is None and say_why else None
    if why:
        print(f"vitcls: {why}; extracting a new store", file=sys.stderr)
    return found


#: how a store's settings are named when a reuse is refused
_SETTING_NAMES = {"weights_id": "weights", "dataset.content": "image contents",
                  "dataset.fingerprint": "image list", "dataset.selection": "image selection",
                  "dataset.n_images": "number of images", "kinds": "site kinds"}


def why_not_reused(results_dir: Union[str, Path], config: dict) -> Optional[str]:
    """Why no complete store of ``config``'s variant on its dataset serves ``config``: the
    settings in which the closest one differs, or None when the variant has none there.

    Args:
        results_dir: the root folder of stores.
        config: the wanted configuration (``format.config_for``).

    Returns:
        One line (``the toy store on toy differs in weights, image contents``), or None.
    """
    folder = Path(results_dir) / config["variant"]
    manifests = _complete_manifests(sorted(folder.glob(f"{config['dataset']['name']}-*/"
                                                       "manifest.json")))
    closest = min((_differences(config, made["config"]) for _, made in manifests),
                  key=len, default=None)
    if not closest:
        return None
    names = ", ".join(_SETTING_NAMES.get(name, name.replace("_", " ")) for name in closest)
    return f"the {config['variant']} store on {config['dataset']['name']} differs in {names}"


def _differences(wanted: dict, made: dict, prefix: str = "") -> List[str]:
    found: List[str] = []
    for key in sorted(set(wanted) | set(made)):
        mine, theirs = wanted.get(key), made.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            found += _differences(mine, theirs, f"{prefix}{key}.")
        elif mine != theirs:
            found.append(prefix + key)
    return found


#: the site kinds of a variant's main store (what chapter 1 reads)
MAIN_KINDS = ("resid_post", "attn_out", "mlp_out")


def main_stores(results_dir: Union[str, Path], dataset: Optional[str] = None
                ) -> Dict[str, Store]:
    """Each variant's main store under ``results_dir``: what the cross-variant comparison
    reads (only those stores are opened). It is unperturbed, has chapter 1's site kinds, and is
    made on the variant's main stimulus set: the one most of its stores were made on (chapters
    1-3 all read it, perturbed runs included; a subset for the perturbation test or a probe
    training split is one store). Ties go to the newest. Which notebook ran last does not
    matter.

    Args:
        results_dir: the root folder of stores.
        dataset: only stores made on this dataset kind.

    Returns:
        {variant key: its main :class:`Store`}.
    """
    entries = [(folder, m) for folder, m in
               _complete_manifests(sorted(Path(results_dir).glob("*/*/manifest.json")))
               if dataset is None or m["config"]["dataset"]["name"] == dataset]
    uses: Dict[tuple, int] = {}
    for _, manifest in entries:
        key = (manifest["config"]["variant"], manifest["config"]["dataset"]["fingerprint"])
        uses[key] = uses.get(key, 0) + 1
    best: Dict[str, tuple] = {}
    for folder, manifest in entries:
        config = manifest["config"]
        if config.get("perturbation") is not None or \
                not set(MAIN_KINDS) <= set(config.get("kinds", [])):
            continue
        rank = (uses[(config["variant"], config["dataset"]["fingerprint"])],
                manifest.get("completed", ""))
        if config["variant"] not in best or rank > best[config["variant"]][0]:
            best[config["variant"]] = (rank, folder)
    return {variant: open_store(folder) for variant, (_, folder) in sorted(best.items())}


def store_room(results_dir: Union[str, Path], variant: VariantLike, data,
               kinds: Sequence[str]) -> int:
    """The bytes a new store of ``variant`` on ``data`` (the stimuli) reserves, from its
    architecture built on the meta device (no weights, no memory); 0 when a store of this
    variant and stimulus set is under way, as its room is reserved already."""
    import json

    import torch

    from ..model.hooks import block_sites
    from ..model.layout import TokenLayout
    from ..model.loading import build_model
    from ..model.registry import get_variant

    spec = get_variant(variant)
    for manifest in Path(results_dir).expanduser().glob(f"{spec.key}/{data.name}-*/"
                                                         "manifest.json"):
        try:
            if json.loads(manifest.read_text()).get("status") != "complete":
                return 0
        except (OSError, ValueError, AttributeError):
            continue
    with torch.device("meta"):
        skeleton = build_model(spec)
    return store_bytes(len(data), len(block_sites(skeleton, kinds)),
                       TokenLayout.of(skeleton).n_tokens, data.has_masks)
