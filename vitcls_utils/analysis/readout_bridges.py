"""Chapter 8's bridges: the plain readout, the tuned lens and the linear probes side by side;
chapter 1's store metrics under the tuned lens; the class-writing heads against chapter 3's
key-value memories.

- :func:`readout_table`: per block and token kind, top-1 agreement with the model's final
  prediction (and with the label) of the plain readout, the tuned lens and the probes, and
  KL(final || readout) for the two readouts that give a distribution (a ridge probe gives
  scores, not probabilities, so it has no KL).
- :func:`first_blocks`: where each readout first reaches a level of agreement.
- :func:`decoded_store`: an extraction store whose block-output ranks are re-read under the
  tuned lens, so that every store-based metric of chapter 1 runs under it unchanged.
- :func:`memory_head_match`: whether the head writing most to the true class in a block owns
  that class's best attention memory (chapter 3), against chance 1/H (per image:
  :func:`memory_head_matches`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError
from ..model.hooks import capture
from ..model.projection import reduce_logits
from ..stores.reader import Store
from ..stores.stimulus_loader import labelled_batches
from .logit_decomposition import Decomposition
from .memories import Memories
from .probing import ProbeResults
from .tuned_lens import LensData, TunedLens, collect, compare, describe, held_out_summary, \
    load_lens, save_lens, train_lens

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

READOUTS = ("plain", "tuned", "probe")


def lens_for(model: nn.Module, train, test_data: LensData, path, steps: int = 300,
             lr: float = 3e-3, seed: int = 0, tokens_per_image: int = 8) -> TunedLens:
    """The tuned lens saved at ``path``, or trained on ``train`` (and saved, with its held-out
    KL on ``test_data`` in the card) when there is none, or its card names another model,
    training split, step count, learning rate, token sample or seed.

    Args:
        model: the loaded variant; train: the training images (a dataset);
        test_data: held-out residuals (:func:`~.tuned_lens.collect`) for the card.
        path: the ``.safetensors`` file; steps, lr, seed, tokens_per_image: the training's.

    Returns:
        The :class:`~.tuned_lens.TunedLens`.
    """
    path = Path(path)
    if path.is_file():
        try:
            lens = load_lens(model, path)
            wanted = dict(steps=steps, seed=seed, lr=lr, tokens_per_image=tokens_per_image,
                          training_split=describe(train))
            if all(lens.card.get(k) == v for k, v in wanted.items()):
                return lens
        except VitclsError:
            pass
    data = collect(model, train, tokens_per_image=tokens_per_image, seed=seed)
    lens = train_lens(model, data, steps=steps, lr=lr, seed=seed)
    save_lens(lens, path, held_out_summary(compare(lens, test_data)))
    return lens


def lens_training_set(dataset: str, data_dir: Optional[str], num_classes: int,
                      per_class: int = 10):
    """The images a tuned lens (or the ablations' reference set) is drawn from, never the
    stimuli: the toy's ``train`` split (``per_class`` per class), else the dataset's probe
    training split (ImageNet-S ``test``: 10 per class).

    Args:
        dataset: the stimuli's dataset kind; data_dir: its root; num_classes: the model's.
        per_class: images per class taken from the toy's train split.

    Returns:
        An image dataset.
    """
    from ..datasets.kinds import ToyDataset, probe_training_set

    if dataset == "toy":
        return ToyDataset(split="train", n_per_class=per_class)
    return probe_training_set(dataset, data_dir, num_classes)


def probe_identifiability(probes: ProbeResults) -> float:
    """% of image tokens whose probe at the last block output ranks the true class first
    (chapter 1's identifiability rate, read by the probes).

    Args:
        probes: :func:`~.probing.probe_results` holding ``resid_post``.

    Returns:
        A percentage.
    """
    rank = probes.by_block("rank", "resid_post")[:, -1, probes.num_prefix:]
    return float(100 * (rank == 0).mean(axis=1).mean())


def readout_table(lens: TunedLens, test_data: LensData,
                  probes: Optional[ProbeResults] = None) -> pd.DataFrame:
    """Plain readout, tuned lens and probes per block and token kind on held-out images.

    Args:
        lens: the tuned lens; test_data: held-out residuals (every image token: collect them
            with a large ``tokens_per_image``).
        probes: :func:`~.probing.probe_results` of ``resid_post`` on the same images (in the
            same order), or None.

    Returns:
        DataFrame: ``kind``, ``block`` (1-based), ``readout`` (plain/tuned/probe), ``kl``
        (NaN for the probe), ``agreement`` and ``top1`` (fractions of tokens), and each per
        image (``kl_images``, ... : [I] arrays, see :func:`~.tuned_lens.compare`).
    """
    table = compare(lens, test_data)
    if probes is None:
        return table
    if not np.array_equal(probes.labels, test_data.labels.numpy()):
        raise VitclsError("the probes were evaluated on other images than the lens: pass the "
                          "same test set to both")
    top1 = probes.by_block("top1", "resid_post").astype(np.int64)               # [I, L, N]
    final = test_data.final.argmax(-1).numpy()[:, None, None]
    labels = probes.labels[:, None, None]
    kinds = {"cls": slice(0, 1), "image": slice(probes.num_prefix, None)}
    rows = []
    for kind in test_data.features:
        part = top1[:, :, kinds[kind]]
        agree, hit = (part == final).mean(2), (part == labels).mean(2)          # [I, L]
        rows += [{"kind": kind, "block": b + 1, "readout": "probe", "kl": float("nan"),
                  "agreement": float(agree[:, b].mean()), "top1": float(hit[:, b].mean()),
                  "kl_images": np.full(len(agree), np.nan), "agreement_images": agree[:, b],
                  "top1_images": hit[:, b]}
                 for b in range(part.shape[1])]
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def first_blocks(table: pd.DataFrame, level: float = 0.9,
                 column: str = "agreement") -> pd.DataFrame:
    """The first block at which each readout and kind reaches ``level`` of ``column``.

    Args:
        table: :func:`readout_table`'s table; level: the level; column: which measure.

    Returns:
        DataFrame: ``kind``, ``readout``, ``first_block`` (1-based; NaN if never reached).
    """
    rows = []
    for (kind, readout), part in table.groupby(["kind", "readout"], sort=False):
        reached = part[part[column] >= level].block
        rows.append({"kind": kind, "readout": readout,
                     "first_block": float(reached.min()) if len(reached) else float("nan")})
    return pd.DataFrame(rows)


@torch.no_grad()
def decoded_store(model: nn.Module, lens: TunedLens, store: Store, dataset,
                  batch_size: int = 32) -> Store:
    """The store's images re-read under the tuned lens: ``rank``, ``top1`` and ``true_logit``
    of every block output (``resid_post``) and token, from the lens's readout (the [CLS]
    translator for token 0 of a [CLS] model, the image one for the others).

    Args:
        model: the model the store was made with; lens: its tuned lens.
        store: its extraction store; dataset: the stimuli it was made from.
        batch_size: images per forward pass.

    Returns:
        A :class:`~vitcls_utils.stores.reader.Store` holding the ``resid_post`` sites alone,
        for chapter 1's metrics (``identifiability.headline``, ``evolution``, ...).
    """
    store.check_source(model=model, stimuli=dataset)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(len(model.blocks))]
    parts: Dict[str, list] = {"rank": [], "top1": [], "true_logit": []}
    labels_seen = []
    for images, labels in labelled_batches(model, dataset, batch_size, "tuned lens", False):
        with capture(model, sites) as cache:
            model(images)
        x = torch.stack([cache[s].float() for s in sites])                      # [L, B, N, D]
        logits = lens.logits("image", x)
        if "cls" in lens.kinds:
            logits[:, :, 0] = lens.logits("cls", x[:, :, 0])
        reduced = reduce_logits(logits.permute(1, 0, 2, 3), labels)             # [B, L, N]
        for key in parts:
            parts[key].append(reduced[key].cpu().numpy())
        labels_seen.append(labels.cpu().numpy())
    if not np.array_equal(np.concatenate(labels_seen), store.labels):
        raise VitclsError("the dataset's images are not the store's: pass the stimuli the store "
                          "was made from")
    manifest = dict(store.manifest, sites=sites)
    return dataclasses.replace(store, sites=sites, manifest=manifest,
                               **{k: np.concatenate(v) for k, v in parts.items()},
                               key_mlp=None, key_attn=None)


def memory_head_match(decomposition: Decomposition, memories: Memories,
                      n_heads: int) -> pd.DataFrame:
    """Per block, how often the head writing most to the decomposed class owns that class's
    best attention memory (chapter 3: the column of ``attn.proj`` with the largest projection
    on the class; column j belongs to head j // d_head).

    Args:
        decomposition: a :class:`~.logit_decomposition.Decomposition` of the true classes.
        memories: the same model's :class:`~.memories.Memories`.
        n_heads: heads per block.

    Returns:
        DataFrame: ``block`` (1-based), ``match`` (fraction of images), ``chance`` (1/H).
    """
    matches = memory_head_matches(decomposition, memories, n_heads)
    return pd.DataFrame({"block": np.arange(1, matches.shape[1] + 1),
                         "match": matches.mean(0), "chance": 1.0 / n_heads})


def memory_head_matches(decomposition: Decomposition, memories: Memories,
                        n_heads: int) -> np.ndarray:
    """:func:`memory_head_match` per image: whether, in each block, the head writing most to
    the image's decomposed class owns that class's best attention memory.

    Args:
        decomposition, memories, n_heads: as :func:`memory_head_match`.

    Returns:
        numpy [I, L] float64 of 0/1 (images by blocks).
    """
    totals = decomposition.head_totals()                                        # [I, L, H]
    classes = torch.as_tensor(decomposition.classes)
    columns = []
    for b in range(totals.shape[1]):
        memory = memories.class_memories("attn", b, k=1)[classes, 0].numpy()   # [I]
        d_head = memories.projection["attn"][b].shape[1] // n_heads
        columns.append((totals[:, b].argmax(-1) == memory // d_head).astype(np.float64))
    return np.stack(columns, axis=1)
