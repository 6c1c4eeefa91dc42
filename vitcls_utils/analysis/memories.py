"""Chapter 3: how the attention and MLP sub-layers build class representations (catalogue E5b, E6,
E10-E13), read off an extraction store and the model's parameters.

A sub-layer is read as a key-value memory (Geva et al.): its *values* are the columns of the
out-projection (``mlp.fc2.weight`` [d, 4d]: 4d memories; ``attn.proj.weight`` [d, d]: d
memories), its *key coefficients* for a token the input of that projection (``mlp.hook_pre``,
before the GELU, and ``attn.hook_z``). Projecting values with the class embeddings E (the head's
weight) says which classes each memory promotes.

- E5b :func:`sublayer_change_rate`: how often a sub-layer favours the true class over its input.
- E6 :func:`residual_composition`: where a block's top-1 class comes from, or none (composition).
- E10 :func:`class_value_agreement`: per class, the best cosine between its embedding and a value.
- A6b :func:`value_vector_classes`: the top classes of chosen value vectors.
- E11 :func:`key_value_agreement`: how often a token's top keys hit its class's top memories.
- E12 :func:`correct_vs_misclassified`: that agreement of [CLS], correct minus misclassified.
- E13 :func:`memory_compositionality`: how often a sub-layer's top-1 is a top memory's class.

Parameter projections use float32 **copies** of the weights (the authors' code normalizes them
in place, B13); token metrics are vectorized over images, tokens and memories."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import StoreError, VitclsError
from ..model.families import require_key_value_memories
from ..stores.reader import Store
from ..base.sites import positions_of_kind
from ..base.stats import box_summary, permutation_greater, wilcoxon_greater

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

#: site kinds a chapter-3 store holds (resid_mid: the MLP's true input, for the exact E5b)
KINDS = ("resid_post", "attn_out", "mlp_out", "resid_mid")
#: top-k key coefficients kept per token (the paper: 5)
KEY_TOPK = 5
LAYERS = ("attn", "mlp")


# Parameters -----------------------------------------------------------------------------------
@dataclass
class Memories:
    """The value projections of every block, computed once from float32 copies.

    ``projection[layer][b]`` is E · W_out [C, M] (raw, as E11-E13 use it) and ``cosine[layer][b]``
    the same with unit-norm class embeddings and value vectors (E10).
    """

    projection: Dict[str, List[torch.Tensor]]
    cosine: Dict[str, List[torch.Tensor]]

    @classmethod
    def of(cls, model: nn.Module) -> "Memories":
        """Read ``model``'s head and out-projections; the model itself is not touched."""
        require_key_value_memories(model)  # not SigLIP's pooled head, not a gated MLP
        embed = model.head.weight.detach().float().cpu().clone()  # [C, d]
        embed_unit = embed / embed.norm(dim=1, keepdim=True)
        projection: Dict[str, List[torch.Tensor]] = {layer: [] for layer in LAYERS}
        cosine: Dict[str, List[torch.Tensor]] = {layer: [] for layer in LAYERS}
        for block in model.blocks:
            for layer, weight in (("attn", block.attn.proj.weight),
                                  ("mlp", block.mlp.fc2.weight)):
                values = weight.detach().float().cpu().clone()  # [d, M]: a memory per column
                projection[layer].append(embed @ values)
                cosine[layer].append(embed_unit @ (values / values.norm(dim=0, keepdim=True)))
        return cls(projection, cosine)

    @property
    def n_blocks(self) -> int:
        return len(self.projection["mlp"])

    def class_memories(self, layer: str, block: int, k: int = KEY_TOPK) -> torch.Tensor:
        """K_c: the k memories with the largest projection on each class, [C, k]."""
        return self.projection[layer][block].topk(k, dim=1).indices

    def memory_classes(self, layer: str, block: int, k: int = KEY_TOPK) -> torch.Tensor:
        """The k classes each memory promotes most, [M, k]."""
        return self.projection[layer][block].topk(k, dim=0).indices.T


def class_value_agreement(memories: Memories) -> pd.DataFrame:
    """E10 (Fig 4a, A6): per block, layer and class, the highest cosine between the class
    embedding and any value vector.

    Args:
        memories: the model's value projections (:meth:`Memories.of`).
    Returns:
        DataFrame: ``block`` (1-based), ``layer`` ("attn"/"mlp"), ``class``, ``agreement``.
    """
    frames = []
    for layer in LAYERS:
        for block, cosine in enumerate(memories.cosine[layer]):
            best = cosine.max(dim=1).values.numpy()
            frames.append(pd.DataFrame({"block": block + 1, "layer": layer,
                                        "class": np.arange(best.size), "agreement": best}))
    return pd.concat(frames, ignore_index=True)


def agreement_vs_random(model: pd.DataFrame, random: pd.DataFrame) -> pd.DataFrame:
    """E10 significance: per block and layer, the one-sided Wilcoxon signed-rank test, paired
    by class, that the model's class-value agreement exceeds its random init's.

    Args:
        model, random: :func:`class_value_agreement` of the model and of its random init.
    Returns:
        DataFrame: ``block``, ``layer``, ``p_value``, ``significant`` (p < 0.05).
    """
    rows = []
    for (block, layer), part in model.groupby(["block", "layer"], sort=True):
        other = random[(random.block == block) & (random.layer == layer)]
        p = wilcoxon_greater(part.sort_values("class").agreement.to_numpy(),
                             other.sort_values("class").agreement.to_numpy())
        rows.append((block, layer, p, p < 0.05))
    return pd.DataFrame(rows, columns=["block", "layer", "p_value", "significant"])


def agreement_boxes(frame: pd.DataFrame, layer: str) -> pd.DataFrame:
    """A6 boxplot statistics of one layer's class-value agreement per block.

    Args:
        frame: :func:`class_value_agreement`'s frame.
        layer: "attn" or "mlp".
    Returns:
        DataFrame: ``block``, ``token`` (= layer) and :func:`~.stats.box_summary`'s columns.
    """
    part = frame[frame.layer == layer]
    return pd.DataFrame([{"block": block, "token": layer, **box_summary(group.agreement)}
                         for block, group in part.groupby("block", sort=True)])


def strongest_values(memories: Memories, block: int, n: int = 8) -> List[int]:
    """The ``n`` MLP value vectors of ``block`` (0-based) with the largest projection on any
    class: where to look first when the paper names no columns."""
    best = memories.projection["mlp"][block].max(dim=0).values
    return best.topk(min(n, best.numel())).indices.tolist()


def value_vector_classes(memories: Memories, block: int, columns: Sequence[int],
                         class_names: Sequence[str], k: int = 5,
                         allowed: Optional[Sequence[int]] = None) -> pd.DataFrame:
    """A6b: the top-k classes of MLP value vectors ``columns`` of ``block`` (0-based), from the
    raw projection E · fc2.weight; ``allowed`` keeps only those classes (the paper: the classes
    present in ImageNet-S)."""
    projection = memories.projection["mlp"][block]
    if allowed is not None:
        mask = torch.full((projection.shape[0],), float("-inf"))
        mask[list(allowed)] = 0.0
        projection = projection + mask[:, None]
    rows = []
    for column in columns:
        if not 0 <= column < projection.shape[1]:
            raise VitclsError(f"column {column} out of range: block {block} has "
                              f"{projection.shape[1]} MLP value vectors")
        top = projection[:, column].topk(k).indices.tolist()
        rows.append({"value vector": column,
                     "top classes": ", ".join(str(class_names[c]) for c in top)})
    return pd.DataFrame(rows)


# -- Store metrics ---------------------------------------------------------------------------------
def _require(results: Store, kinds: Sequence[str] = (), keys: bool = False) -> None:
    missing = [k for k in kinds if not positions_of_kind(results.sites, k)]
    if missing or (keys and results.key_mlp is None):
        raise StoreError(
            f"{results.path} lacks {'key indices' if not missing else missing}: chapter 3 needs "
            f"a store made with kinds={KINDS} and key_topk={KEY_TOPK} "
            "(vitcls_utils.store_for(variant, kinds=memories.KINDS, "
            "key_topk=memories.KEY_TOPK) makes it)")


def _token_split(results: Store) -> Dict[str, slice]:
    image = {"image": slice(results.num_prefix, None)}
    return {"[CLS]": slice(0, 1), **image} if results.has_cls else image


def sublayer_change_rate(results: Store, exact: bool = False) -> pd.DataFrame:
    """E5b (Fig 3b, A5 left): for blocks 2..L, the fraction of tokens whose true-class logit is
    higher at the sub-layer's output than at its input, both read with the final norm and head.

    Args:
        results: a chapter-3 store (kinds :data:`KINDS`; ``resid_mid`` for ``exact``).
        exact: compare the MLP with its true input, ``resid_mid``, not the block input (B9).
    Returns:
        DataFrame: ``block`` (2..L), ``layer``, ``token`` ("[CLS]"/"image"), ``rate`` (0-1) and
        ``rate_images`` (an [I] array: each image's rate; ``rate`` is their mean).
    """
    _require(results, ["resid_post", "attn_out", "mlp_out"] + (["resid_mid"] if exact else []))
    block_input = results.by_block("true_logit", "resid_post")[:, :-1]  # hs_{b-1}, b = 1..L-1
    inputs = {"attn": block_input,
              "mlp": results.by_block("true_logit", "resid_mid")[:, 1:] if exact else block_input}
    rows = []
    for layer in LAYERS:
        output = results.by_block("true_logit", f"{layer}_out")[:, 1:]
        increased = output > inputs[layer]  # [I, L-1, N]
        for token, columns in _token_split(results).items():
            rate, per_image = (increased[:, :, columns].mean(axis=a) for a in ((0, 2), 2))
            rows += [(b + 2, layer, token, float(r), per_image[:, b]) for b, r in enumerate(rate)]
    return pd.DataFrame(rows, columns=["block", "layer", "token", "rate", "rate_images"])


def residual_composition(results: Store, paper: bool = False) -> pd.DataFrame:
    """E6 (Fig 3c, A5 right): for blocks 2..L, the % of tokens ([CLS] included) whose top-1
    class after the block equals the top-1 of the previous state, of the attention output, of
    the MLP output, or none of them ("composition"). The categories overlap.

    Args:
        results: a store with ``resid_post``, ``attn_out`` and ``mlp_out`` sites.
        paper: the authors' composition, which compares with the attention output twice and
            never with the MLP (B1).
    Returns:
        DataFrame: ``block`` (2..L), ``source`` (previous/attn/mlp/composition), ``percent``
        and ``percent_images`` (an [I] array: each image's %; ``percent`` is their mean).
    """
    top = {kind: results.by_block("top1", kind) for kind in ("resid_post", "attn_out", "mlp_out")}
    now, previous = top["resid_post"][:, 1:], top["resid_post"][:, :-1]
    same = {"previous": now == previous, "attn": now == top["attn_out"][:, 1:],
            "mlp": now == top["mlp_out"][:, 1:]}
    if paper:
        same["composition"] = ~same["previous"] & ~same["attn"] & ~same["attn"]  # B1
    else:
        same["composition"] = ~same["previous"] & ~same["attn"] & ~same["mlp"]
    rows = []
    for source, hits in same.items():
        per_image = 100 * hits.mean(axis=2)
        rows += [(b + 2, source, float(100 * v), per_image[:, b])
                 for b, v in enumerate(hits.mean(axis=(0, 2)))]
    return pd.DataFrame(rows, columns=["block", "source", "percent", "percent_images"])


def _agreement(results: Store, memories: Memories, layer: str, paper_text: bool
               ) -> np.ndarray:
    """Key-value agreement [I, L, N] (bool): some top key of the token is among its true
    class's top memories (the code's rule), or (``paper_text``) the true class is among the top
    classes of one of the token's top memories (the paper's wording, B11)."""
    _require(results, keys=True)
    keys = np.asarray(results.key_mlp if layer == "mlp" else results.key_attn).astype(np.int64)
    k = keys.shape[-1]
    labels = results.labels.astype(np.int64)
    out = np.zeros(keys.shape[:3], dtype=bool)
    for block in range(keys.shape[1]):
        n_memories = memories.projection[layer][block].shape[1]
        member = np.zeros((memories.projection[layer][block].shape[0], n_memories), dtype=bool)
        if paper_text:  # class c is among the top-k classes of memory j
            classes = memories.memory_classes(layer, block, k).numpy()  # [M, k]
            member[classes.T.ravel(), np.tile(np.arange(n_memories), k)] = True
        else:  # memory j is among the top-k memories of class c
            chosen = memories.class_memories(layer, block, k).numpy()  # [C, k]
            member[np.repeat(np.arange(member.shape[0]), k), chosen.ravel()] = True
        block_keys = keys[:, block]  # [I, N, k]; -1 marks a removed token
        hits = member[labels[:, None, None], np.clip(block_keys, 0, None)] & (block_keys >= 0)
        out[:, block] = hits.any(-1)
    return out


def key_value_agreement(results: Store, memories: Memories, paper_text: bool = False
                        ) -> pd.DataFrame:
    """E11 (Fig 4b, A7): per block, layer and class, the % of its images' tokens ([CLS]
    included) whose top-5 keys meet the class's top-5 memories.

    Args:
        results: a chapter-3 store with key indices.
        memories: the model's value projections.
        paper_text: the paper's wording's rule instead of its code's (B11).
    Returns:
        DataFrame: ``block`` (1-based), ``layer``, ``class``, ``rate`` (%).
    """
    frames = []
    labels = results.labels
    classes = np.unique(labels)
    for layer in LAYERS:
        agree = _agreement(results, memories, layer, paper_text).mean(axis=2)  # [I, L]
        for block in range(agree.shape[1]):
            per_class = pd.Series(agree[:, block]).groupby(labels).mean()
            frames.append(pd.DataFrame({"block": block + 1, "layer": layer, "class": classes,
                                        "rate": 100 * per_class.loc[classes].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def correct_vs_misclassified(results: Store, memories: Memories, n_permutations: int = 300,
                             seed: int = 0, paper: bool = False) -> pd.DataFrame:
    """E12 (A8): per block and layer, % key-value agreement of token 0 ([CLS]) over correctly
    classified images minus over misclassified ones, with a one-sided permutation test of the
    image labels (seeded; ``paper=True``: uncorrected count/n, B19).

    Args:
        results: a chapter-3 store with key indices.
        memories: the model's value projections.
        n_permutations, seed: label shuffles per block; block b (0-based) uses ``seed + b``.
        paper: the authors' p-value, count/n (B19).
    Returns:
        DataFrame: ``block``, ``layer``, ``difference`` (percentage points; NaN unless both
        groups have images), ``p_value``, ``significant``, ``agreement_images`` ([I] 0/1).
    """
    correct = results.pred == results.labels
    rows = []
    for layer in LAYERS:
        agree = _agreement(results, memories, layer, paper_text=False)[:, :, 0]  # [I, L]
        for block in range(agree.shape[1]):
            values = agree[:, block].astype(np.float64)
            if correct.all() or not correct.any():
                rows.append((block + 1, layer, np.nan, np.nan, False, values))
                continue
            diff = 100 * (values[correct].mean() - values[~correct].mean())
            p = permutation_greater(values[correct], values[~correct], n_permutations,
                                    seed=seed + block, paper=paper)
            rows.append((block + 1, layer, diff, p, p < 0.05, values))
    return pd.DataFrame(rows, columns=["block", "layer", "difference", "p_value", "significant",
                                       "agreement_images"])


def memory_compositionality(results: Store, memories: Memories) -> pd.DataFrame:
    """E13 (A9): per block and layer, the % of tokens ([CLS] included) whose sub-layer top-1
    class (its output read with the final norm and head) is the top class of one of the token's
    top-5 memories ("match"); 100 - match is the compositional share.

    Args:
        results: a chapter-3 store with key indices.
        memories: the model's value projections.
    Returns:
        DataFrame: ``block`` (1-based), ``layer``, ``match`` (%), and per image ([I] arrays)
        ``hits_images`` (matching tokens) and ``tokens_images`` (tokens not removed).
    """
    _require(results, ["attn_out", "mlp_out"], keys=True)
    rows = []
    for layer in LAYERS:
        keys = np.asarray(results.key_mlp if layer == "mlp" else results.key_attn)
        own = results.by_block("top1", f"{layer}_out")  # [I, L, N]
        for block in range(keys.shape[1]):
            top_class = memories.projection[layer][block].argmax(dim=0).numpy()  # [M]
            block_keys = keys[:, block].astype(np.int64)
            valid = block_keys[..., 0] >= 0
            hits = (top_class[np.clip(block_keys, 0, None)] == own[:, block, :, None]).any(-1)
            rows.append((block + 1, layer, float(100 * hits[valid].mean()),
                         (hits & valid).sum(1), valid.sum(1)))
    return pd.DataFrame(rows, columns=["block", "layer", "match", "hits_images", "tokens_images"])


# -- Running ---------------------------------------------------------------------------------------
def memories_for(variant: str, device: str = "cpu", seed: int = 0,
                 weights: Optional[str] = None) -> Memories:
    """The value projections of a variant, loaded the way its store was made."""
    from ..model.loading import load_variant

    return Memories.of(load_variant(variant, weights=weights, device=device, seed=seed).cpu())


def save_summary(results: Store, name: str, frame: pd.DataFrame) -> Path:
    """Keep a per-variant summary beside its store, for the cross-variant comparisons.

    Args:
        results: the store; the summary goes to its ``summaries`` folder.
        name: the summary's name (the file's stem).
        frame: the summary, written as CSV without its index.
    Returns:
        The path written, ``<store>/summaries/<name>.csv``.
    """
    folder = Path(results.path) / "summaries"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def load_summary(results: Store, name: str) -> Optional[pd.DataFrame]:
    """A summary written by :func:`save_summary`, or None if this store has none."""
    path = Path(results.path) / "summaries" / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def collect_summaries(stores: Sequence[Store]) -> Dict[tuple, pd.DataFrame]:
    """The chapter-3 summaries of many stores for the comparison page, a row per class (what
    its intervals resample); a variant's first store with the summary wins
    (:func:`~vitcls_utils.stores.reader.find_stores` lists the newest first).

    Args:
        stores: the stores, of 12- or 24-block models.
    Returns:
        {(variant, "class_value_agreement" or "key_value_agreement"): DataFrame with ``block``
        (normalised, 1..12; a 24-block model's pairs averaged per class), ``layer``,
        ``class`` and ``agreement`` or ``rate``}.
    """
    from .identifiability import normalized_blocks

    summaries: Dict[tuple, pd.DataFrame] = {}
    for store in stores:
        for name in ("class_value_agreement", "key_value_agreement"):
            frame = load_summary(store, name)
            if frame is not None and (store.variant, name) not in summaries:
                value = "agreement" if name == "class_value_agreement" else "rate"
                summaries[(store.variant, name)] = normalized_blocks(frame[[
                    "block", "layer", "class", value]], store.n_blocks, value, ["layer", "class"])
    return summaries
