"""A ViT's anatomy as the original ViT paper reads it (Dosovitskiy et al. 2021, Fig. 6, 7, 11):
where attention looks (mean attention distance, one function shared with ConViT's
nonlocality), what the patch and position embeddings hold, and attention rollout with its
residual-identity step as a parameter. Functions of tensors: the hooks layer reads them from
the unmodified model.

No [CLS] policy of the attention distance here is an authors' convention: the ViT paper states
none, and ConViT's only nonlocality code (its ``main.py``) never has [CLS] in the sequence: it
feeds each layer the patch embedding alone (``inputs="authors"`` below), and its MHSA
``get_attention_map`` runs only on CUDA and fails on 197 tokens. So the nonlocality of a DeiT
and of ConViT's MHSA layers, with [CLS] present, has no authors' counterpart; the prefix
policy here is the book's, stated where it is chosen.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

PREFIX_POLICIES = ("drop", "renormalize")
#: what each block's attention is measured on: its real input in the forward (the paper's
#: definition), or ConViT's ``main.py``: the patch embedding alone fed to every layer
INPUTS = ("real", "authors")


def patch_distances(grid: Sequence[int]) -> torch.Tensor:
    """Euclidean distances between patch centres, in patches: [T, T] for a row-major grid."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    return torch.cdist(centres, centres)


def mean_attention_distance(attn: torch.Tensor, grid: Sequence[int], num_prefix: int = 1,
                            patch_size: Optional[int] = None,
                            prefix: str = "drop") -> torch.Tensor:
    """Mean distance attention spans, per head: (1/T) sum_ij A_ij |c_i - c_j| over the T patch
    queries i and keys j (ViT's "attention distance"; in patches, ConViT's nonlocality, Eq. 8).

    Args:
        attn: attention probabilities [..., H, N, N], N = num_prefix + T.
        grid: the patch grid (rows, columns).
        num_prefix: prefix tokens ([CLS], registers) first in the sequence.
        patch_size: give it to get pixels (ViT's Fig. 7 and 11); None: patches.
        prefix: "drop" the prefix rows and columns (attention on them counts as distance 0:
            Eq. 8 summed over the patches) or "renormalize" each query's patch weights to sum
            1. Neither is an authors' convention: the ViT paper states none, and ConViT's code
            never measures with a prefix token present (see the module's docstring).

    Returns:
        [..., H], float64.
    """
    if prefix not in PREFIX_POLICIES:
        raise ValueError(f"prefix must be one of {PREFIX_POLICIES}, not {prefix!r}")
    n_patches = grid[0] * grid[1]
    if attn.shape[-1] != num_prefix + n_patches or attn.shape[-2] != attn.shape[-1]:
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit {num_prefix} "
                         f"prefix tokens and a {grid[0]}x{grid[1]} grid")
    patches = attn[..., num_prefix:, num_prefix:].double()
    if prefix == "renormalize":
        patches = patches / patches.sum(-1, keepdim=True)
    distance = (patches * patch_distances(grid).to(patches.device)).sum(-1).mean(-1)
    return distance * patch_size if patch_size else distance


def patch_position_embeddings(model) -> torch.Tensor:
    """The position embeddings of the patches of a timm ViT, [T, D] (a prefix slot, where the
    model has one, left out).

    Args:
        model: a timm ViT with ``pos_embed`` and ``patch_embed.num_patches``.

    Returns:
        The patches' position embeddings, detached, [T, D] in the table's dtype.
    """
    table = model.pos_embed.detach()[0]
    if getattr(model, "no_embed_class", False):
        return table
    return table[table.shape[0] - model.patch_embed.num_patches:]


def position_similarity(embeddings: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding to every other's (ViT Fig. 7
    centre): [rows, cols, rows, cols], tile (r, c) the similarities of patch (r, c).

    Args:
        embeddings: the patches' position embeddings, [T, D], T = rows * cols, row-major.
        grid: the patch grid (rows, columns).

    Returns:
        Cosine similarities, [rows, cols, rows, cols], float64.
    """
    if embeddings.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"{embeddings.shape[0]} embeddings for a {grid[0]}x{grid[1]} grid")
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    return (unit @ unit.T).reshape(grid[0], grid[1], grid[0], grid[1])


def patch_embedding_components(weight: torch.Tensor, k: int = 28
                               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the patch-embedding filters (ViT Fig. 7 left): the D filters
    [D, C, P, P] as vectors, centred.

    Args:
        weight: the patch-embedding convolution's weight, [D, C, P, P].
        k: how many components to keep (at most D; 28 as in the paper's figure).

    Returns:
        (components [k, C, P, P], each one's share of the total variance [k]), both float64.
    """
    rows = weight.detach().double().flatten(1)
    centred = rows - rows.mean(0, keepdim=True)
    _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)
    k = min(k, vectors.shape[0])
    variance = singular ** 2
    return vectors[:k].reshape(k, *weight.shape[1:]), variance[:k] / variance.sum()


def low_frequency_share(components: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Share of each filter's spatial power (its mean removed) at frequencies within ``cutoff``
    of the Nyquist frequency, channels pooled: [k]. Fig. 7 left's "low-frequency basis
    functions" as a number (a random filter spreads its power evenly: about pi * cutoff^2 / 4).

    Args:
        components: filters, [k, C, P, P] (e.g. from :func:`patch_embedding_components`).
        cutoff: radius of the low band, as a fraction of the Nyquist frequency.

    Returns:
        Each filter's low-frequency share of its power, in [0, 1], [k] float64.
    """
    x = components.double()
    x = x - x.mean(dim=(-1, -2), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).sum(-3)  # [k, P, P]
    size = power.shape[-1]
    freq = torch.fft.fftfreq(size, dtype=torch.float64).abs() * 2  # 1 = Nyquist
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    low = power[:, radius <= cutoff].sum(-1)
    return low / power.flatten(1).sum(-1).clamp_min(1e-300)


def similarity_by_distance(similarity: torch.Tensor) -> "pd.DataFrame":
    """Mean cosine similarity of position embeddings by the distance of their patches (in
    patches, rounded to the nearest whole patch; the patch itself left out): rows (distance,
    similarity, pairs). Locality shows as similarity falling with distance.

    Args:
        similarity: cosine similarities [rows, cols, rows, cols] from :func:`position_similarity`.

    Returns:
        DataFrame, one row per rounded distance: ``distance`` (int, patches), ``similarity``
        (mean cosine similarity), ``pairs`` (number of ordered patch pairs averaged).
    """
    import pandas as pd

    rows, cols = similarity.shape[:2]
    distance = patch_distances((rows, cols)).round()
    flat = similarity.reshape(rows * cols, rows * cols).double()
    off = ~torch.eye(rows * cols, dtype=torch.bool)
    frame = pd.DataFrame({"distance": distance[off].numpy().astype(int),
                          "similarity": flat[off].numpy()})
    return frame.groupby("distance", as_index=False).similarity.agg(["mean", "size"]).rename(
        columns={"mean": "similarity", "size": "pairs"})


def rollout(attentions: Sequence[torch.Tensor], residual: Optional[float] = 0.5
            ) -> torch.Tensor:
    """Attention rollout (ViT Fig. 6, Abnar & Zuidema 2020): per block the head mean, with the
    identity mixed in at weight ``residual`` and rows renormalized (None or 0: the plain head
    mean, as the ViT text describes it), multiplied from the first block to the last: [B, N, N].
    Row 0 is the [CLS] token's; its patch columns are the map."""
    product = None
    for attention in attentions:  # [B, H, N, N]
        step = attention.mean(1)
        if residual:
            eye = torch.eye(step.shape[-1], device=step.device, dtype=step.dtype)
            step = residual * eye + (1 - residual) * step
            step = step / step.sum(-1, keepdim=True)
        product = step if product is None else step @ product
    if product is None:
        raise ValueError("rollout needs the attention of at least one block")
    return product


# ----------------------------------------------------------------------------------------------
# Over a dataset, and the architectures' sizes
# ----------------------------------------------------------------------------------------------
def attention_distances(model, dataset, n_images: Optional[int] = 128, prefix: str = "drop",
                        pixels: bool = True, batch_size: int = 32, progress: bool = True,
                        inputs: str = "real") -> "pd.DataFrame":
    """Mean attention distance of every head of every block over the first ``n_images``
    readable stimuli (ViT Fig. 7 right and 11; ConViT's nonlocality with ``pixels=False``):
    rows (block, head, distance), both 1-based, in pixels of the model's input
    (``pixels=False``: in patches).

    The attention is read at ``attn.hook_pattern`` (the explicit softmax, never fused) of the
    unmodified model, reduced per batch so that no [N, N] map is kept. With ``inputs="real"``
    (the default, the paper's definition) each block attends over its real input in the
    forward; with ``inputs="authors"`` each block's attention module is applied to the patch
    embedding alone (no position embedding, no [CLS], no norm, no earlier blocks), as ConViT's
    ``main.py`` logs nonlocality (catalogue C3).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``) whose attention the hooks can read.
        dataset: the stimuli; unreadable ones are skipped.
        n_images: how many readable images to average over; None: the whole dataset.
        prefix: "drop" or "renormalize", the prefix-token policy of
            :func:`mean_attention_distance` (no prefix token with ``inputs="authors"``).
        pixels: distances in input pixels (True) or in patches (False).
        batch_size: images per forward pass.
        progress: show a progress bar.
        inputs: "real" (each block's input in the forward) or "authors" (the patch embedding
            alone, ConViT's code).

    Returns:
        DataFrame with a row per (block, head): ``block`` (1-based), ``head`` (1-based, as
        :func:`~vitcls_utils.analysis.convit.gates` and the papers' figures count),
        ``distance`` (mean attention distance) and ``distance_images`` (each image's, an
        [images] array in the order read; their mean is ``distance``).
    """
    import pandas as pd

    from ..datasets.kinds import UNREADABLE
    from ..model.hooks import hooks
    from ..stores.stimulus_loader import stimulus_loader
    from ..base.progress import with_progress
    from ..model.families import require
    from ..model.layout import TokenLayout

    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, not {inputs!r}")
    require(model, "image_attention", "an attention distance")  # not within Swin's windows
    layout = TokenLayout.of(model)
    patch = int(model.patch_embed.patch_size[0]) if pixels else None
    device = next(model.parameters()).device
    total = len(dataset) if n_images is None else min(n_images, len(dataset))
    kept: Dict[int, List[torch.Tensor]] = {b: [] for b in range(len(model.blocks))}
    seen = 0

    def add(value: torch.Tensor, name: str) -> None:
        present = value.shape[-1] - layout.n_patches  # 0 in a ConViT's blocks before [CLS]
        distance = mean_attention_distance(value[:take], layout.grid, present, patch, prefix)
        kept[int(name.split(".")[1])].append(distance.double().cpu())  # [images, heads]

    loader = stimulus_loader(dataset, model.vitcls_info.variant.preprocess, layout, batch_size,
                             device=device)
    with torch.no_grad(), hooks(model, [(lambda n: n.endswith("attn.hook_pattern"), add)]):
        for batch in with_progress(loader, total, "attention", progress):
            images = batch["image"][batch["status"] != UNREADABLE]
            take = min(len(images), total - seen)
            if take > 0:
                run_attention(model, images[:take].to(device), inputs)
                seen += take
            if seen >= total:
                break
    if seen == 0:
        raise ValueError("no readable image to measure attention on")
    per_image = torch.stack([torch.cat(kept[b]) for b in sorted(kept)]).numpy()  # [L, I, H]
    return pd.DataFrame([(b + 1, h + 1, float(per_image[b, :, h].mean()), per_image[b, :, h])
                         for b in range(per_image.shape[0]) for h in range(per_image.shape[2])],
                        columns=["block", "head", "distance", "distance_images"])


def distance_per_image(distances: "pd.DataFrame") -> Dict[int, np.ndarray]:
    """Each image's mean attention distance over a block's heads, per block.

    Args:
        distances: :func:`attention_distances`'s frame, with ``distance_images``.

    Returns:
        {block (1-based): an [images] array; its mean is the block's mean over heads}.
    """
    return {int(block): np.mean(np.stack(rows.distance_images.to_list()), axis=0)
            for block, rows in distances.groupby("block")}


def run_attention(model, images: torch.Tensor, inputs: str = "real") -> None:
    """Run every block's attention on ``images`` (preprocessed, [B, 3, S, S]) so that hooks
    at ``attn.hook_pattern`` fire: the model's forward ("real"), or each block's attention
    module on the patch embedding alone ("authors", ConViT's ``main.py``)."""
    if inputs == "real":
        model(images)
        return
    tokens = model.patch_embed(images)
    tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens  # an NHWC patch embedding
    for block in model.blocks:
        block.attn(tokens)


#: the ViT paper's Table 1 (layers, width, MLP size, heads); its parameter counts are in
#: data/paper/vit_table1.csv, beside timm's
TABLE1_ARCHS = {"Base": "vit_base_patch16_224", "Large": "vit_large_patch16_224",
                "Huge": "vit_huge_patch14_224"}


def architecture_row(arch, **kwargs) -> dict:
    """Layers, width, MLP size, heads and parameter count of a timm ViT (an architecture name,
    or a registry :class:`~vitcls_utils.model.registry.Variant` with its head and arguments), built
    on the meta device (no memory, no weights, no download).

    Args:
        arch: a timm architecture name, or a registry ``Variant``.
        **kwargs: further arguments to ``timm.create_model`` (over the variant's own).

    Returns:
        dict with ``layers``, ``width`` (embedding dimension), ``mlp`` (hidden size), ``heads``
        and ``parameters`` (count), all ints.
    """
    import timm

    if not isinstance(arch, str):
        kwargs = {"num_classes": arch.num_classes, **dict(arch.model_kwargs), **kwargs}
        arch = arch.arch
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, **kwargs)
    return {"layers": len(model.blocks), "width": int(model.embed_dim),
            "mlp": int(model.blocks[0].mlp.fc1.out_features),
            "heads": int(model.blocks[0].attn.num_heads),
            "parameters": sum(p.numel() for p in model.parameters())}


def distance_and_gain(distances: "pd.DataFrame", evolution: Optional["pd.DataFrame"]
                      ) -> "pd.DataFrame":
    """Per block: the heads' mean attention distance beside the change of mean identifiability
    from the block before ("gain [CLS]", "gain image"; from chapter 1's evolution frame, None
    for a model without a head). Block 1 has no block before it: its gain is empty.

    Args:
        distances: :func:`attention_distances`'s frame (block, head, distance).
        evolution: identifiability by block, columns token ("[CLS]" or "image"), block and
            identifiability (:func:`~vitcls_utils.analysis.identifiability.evolution`); or None.

    Returns:
        DataFrame, one row per block: ``block``, ``distance`` (mean over heads), and where
        ``evolution`` has that token, ``gain [CLS]`` and ``gain image`` (NaN for block 1),
        each followed, where ``evolution`` has ``identifiability_images``, by its "..., 95%
        CI" (the gain paired over the same images,
        :func:`~vitcls_utils.base.uncertainty.paired_difference`; "–" for block 1).
    """
    from ..base.uncertainty import paired_difference

    frame = distances.groupby("block", as_index=False).distance.mean()
    if evolution is None:
        return frame
    for token, column in (("[CLS]", "gain [CLS]"), ("image", "gain image")):
        rows = evolution[evolution.token == token].set_index("block")
        if rows.empty:
            continue
        frame[column] = frame.block.map(rows.identifiability.diff())
        if "identifiability_images" in rows:
            per_image = rows.identifiability_images
            frame[f"{column}, 95% CI"] = [
                paired_difference(per_image[b], per_image[b - 1]).bounds(3)
                if b - 1 in per_image.index and b in per_image.index else "–"
                for b in frame.block]
    return frame


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two per-block series (pairs with a gap left out).

    Args:
        x: a series of values, one per block.
        y: the other series, aligned with ``x``.

    Returns:
        Spearman's rho; NaN when fewer than 3 complete pairs remain.
    """
    import pandas as pd

    pairs = pd.DataFrame({"x": list(x), "y": list(y)}).dropna()
    if len(pairs) < 3:
        return float("nan")
    return float(pairs.x.rank().corr(pairs.y.rank()))
