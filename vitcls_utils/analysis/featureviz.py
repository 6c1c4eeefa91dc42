"""Feature visualisation of FFN units (Ghiasi et al.; chapter 6, G1/G3/G8): an image optimised
to excite one hidden unit, the unit's top-activating images from one streamed pass, and its
per-patch activation map.

The unit is hidden unit ``i`` of block ``l``'s MLP after its activation (GELU, QuickGELU for
CLIP): the ``mlp.hook_post`` site. Its activation on an image is the mean over the patch tokens
([CLS] and other prefix tokens excluded). The recipe follows the authors' code, whose choices
differ from the paper's text in four places, each a parameter here (catalogue §8):
the noise is a per-channel constant (the text: per pixel), its scale follows their
``GaussianNoise`` counter (0.5·((steps − 2 − i) mod steps)/steps at step i: 0 at step
steps − 2, then back near 0.5; the text: a linear decay), the loss is divided by the number of
copies once more (the text: no such factor; it only rescales the TV weight), and ColorShift is
(x - mu) / sigma.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .stimulus_edits import normalize  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402

NOISE_SCHEDULES = ("authors", "linear")


@dataclass(frozen=True)
class Recipe:
    """Ghiasi et al.'s activation-maximisation settings (their ``vis35.py``).

    Attributes:
        steps: optimisation steps (the code runs ``steps + 1`` iterations).
        copies: augmented copies per step.
        lr, betas, eps: Adam; the learning rate is cosine-annealed to 0 over ``steps``.
        tv: the TV weight's factor v (weight 0.0005 · v; the paper's grids use 0.1 and 1).
        jitter: largest circular shift in pixels; None scales the authors' 32 px at 384 px to
            the model's input size.
        noise: scale of the decaying noise at its largest (:func:`noise_scale`).
        noise_kind: "channel" (the code: one constant per copy and channel) or "pixel" (the text).
        noise_schedule: "authors" (the code's ``GaussianNoise`` counter, with ``max_iter`` =
            ``steps``: noise · ((steps − 2 − i) mod steps) / steps at step i) or "linear" (the
            text: noise · (1 − i / steps)).
        copies_in_loss: divide the objective by ``copies`` once more, as the code does.

    Args:
        steps, copies, lr, betas, eps, tv, jitter, noise, noise_kind, noise_schedule,
            copies_in_loss: the attributes above, as keyword arguments (the defaults are the
            authors' code's).
    """

    steps: int = 400
    copies: int = 8
    lr: float = 0.1
    betas: tuple = (0.5, 0.99)
    eps: float = 1e-8
    tv: float = 0.1
    jitter: Optional[int] = None
    noise: float = 0.5
    noise_kind: str = "channel"
    noise_schedule: str = "authors"
    copies_in_loss: bool = True


def noise_scale(recipe: Recipe, step: int) -> float:
    """The noise's scale at ``step`` (0 .. ``recipe.steps``; the loop runs ``steps + 1``):
    "authors": their ``GaussianNoise`` counter starts at steps − 1, moves down one when built
    and before every step, wrapping modulo steps (0.4975 at step 0 of 400, 0 at 398, 0.49875
    at 399, 0.4975 at 400). "linear": the text's noise · (1 − i / steps).

    Args:
        recipe: the settings (``noise``, ``steps``, ``noise_schedule``).
        step: the 0-based step.
    Returns:
        The scale, a float.
    """
    if recipe.noise_schedule == "authors":
        return recipe.noise * ((recipe.steps - 2 - step) % recipe.steps) / recipe.steps
    if recipe.noise_schedule == "linear":
        return recipe.noise * (1 - step / recipe.steps)
    raise VitclsError(f"noise_schedule must be one of {NOISE_SCHEDULES}, not "
                      f"{recipe.noise_schedule!r}")


@dataclass
class Visualization:
    """The optimised image [3, S, S] in [0, 1], the objective (the unit's patch-mean
    activation, averaged over the augmented copies) at every step, and the unit's activation
    on the final image itself (no augmentation), comparable with a stimulus's."""

    image: torch.Tensor
    objective: List[float] = field(default_factory=list)
    block: int = 0
    unit: int = 0
    activation: float = float("nan")


def _unit_site(model: nn.Module, block: int, unit: int) -> str:
    if not 0 <= block < len(model.blocks):
        raise VitclsError(f"block {block} is not one of the model's blocks "
                          f"0..{len(model.blocks) - 1}")
    width = model.blocks[block].mlp.fc1.out_features
    if not 0 <= unit < width:
        raise VitclsError(f"unit {unit} is not one of block {block}'s FFN units 0..{width - 1}")
    return f"blocks.{block}.mlp.hook_post"


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters without gradients inside the block (only the image is optimised), their
    ``requires_grad`` flags restored afterwards; the weights are never written."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """The authors' TV: per image and channel, the L2 norms of the horizontal, vertical and two
    diagonal first differences, each averaged over images and channels, then summed."""
    diffs = (x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :],
             x[..., 1:, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, 1:])
    return sum(d.flatten(-2).norm(dim=-1).mean() for d in diffs)


def augment(x: torch.Tensor, recipe: Recipe, step: int, jitter: int,
            gen: torch.Generator) -> torch.Tensor:
    """Copies of the [1, 3, S, S] image with ColorShift, the decaying noise and a jitter."""
    n = recipe.copies
    batch = x.repeat(n, 1, 1, 1)
    mu = torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1
    sigma = torch.exp(torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    batch = (batch - mu.to(x)) / sigma.to(x)
    scale = noise_scale(recipe, step)
    shape = (n, 3, 1, 1) if recipe.noise_kind == "channel" else tuple(batch.shape)
    if recipe.noise_kind not in ("channel", "pixel"):
        raise VitclsError(f"noise_kind must be 'channel' or 'pixel', not {recipe.noise_kind!r}")
    batch = batch + scale * torch.randn(shape, generator=gen).to(x)
    dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
    return torch.roll(batch, shifts=(dy, dx), dims=(-2, -1))


def unit_activation(model: nn.Module, images: torch.Tensor, block: int, unit: int,
                    preprocess) -> torch.Tensor:
    """The unit's patch-mean activation for each [0, 1] image [B, 3, S, S] (with gradients);
    the forward stops at the unit's block."""
    from ..model.hooks import forward_to

    site = _unit_site(model, block, unit)
    n_patches = TokenLayout.of(model).n_patches
    value = forward_to(model, normalize(images, preprocess), [site], detach=False)[site]
    return value[:, -n_patches:, unit].mean(1)  # the patches come last (a ConViT's [CLS] late)


def visualize(model: nn.Module, block: int, unit: int, recipe: Recipe = Recipe(),
              seed: int = 0, preprocess=None) -> Visualization:
    """An image that maximises FFN unit ``unit`` of 0-based ``block``, by Ghiasi et al.'s
    recipe; the same seed gives the same image. The model is read, never changed."""
    variant = getattr(getattr(model, "vitcls_info", None), "variant", None)
    preprocess = preprocess or (variant.preprocess if variant is not None else None)
    if preprocess is None:
        raise VitclsError("give the preprocessing of a model not loaded through load_variant")
    _unit_site(model, block, unit)
    _check_steps(recipe)
    device = next(model.parameters()).device
    size = tuple(int(s) for s in model.patch_embed.img_size)
    jitter = recipe.jitter if recipe.jitter is not None else max(1, round(32 * size[0] / 384))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 3) + size, generator=gen).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=recipe.lr, betas=recipe.betas, eps=recipe.eps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.steps)
    history = []
    with frozen(model):
        for step in range(recipe.steps + 1):
            batch = augment(x, recipe, min(step, recipe.steps), jitter, gen)
            per_copy = unit_activation(model, batch, block, unit, preprocess)
            objective = per_copy.mean()
            scaled = objective / recipe.copies if recipe.copies_in_loss else objective
            loss = -scaled + 0.0005 * recipe.tv * total_variation(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step < recipe.steps:
                schedule.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            history.append(objective.item())
        with torch.no_grad():
            final = float(unit_activation(model, x, block, unit, preprocess)[0])
    return Visualization(image=x.detach()[0].cpu(), objective=history, block=block, unit=unit,
                         activation=final)


# ----------------------------------------------------------------------------------------------
# Top-activating images, one streamed pass
# ----------------------------------------------------------------------------------------------
@dataclass
class TopImages:
    """The ``k`` images of largest patch-mean activation for every unit of the chosen blocks.

    Attributes:
        blocks: 0-based blocks, in order.
        values: [len(blocks), units, k] activations, largest first.
        indices: [len(blocks), units, k] dataset positions of those images.
        mean: [len(blocks), units] the activation averaged over all images read.
    """

    blocks: List[int]
    values: np.ndarray
    indices: np.ndarray
    mean: np.ndarray

    def of(self, block: int, unit: int) -> List[int]:
        """Dataset positions of the unit's top images, best first."""
        return self.indices[self.blocks.index(block), unit].tolist()


def top_images(model: nn.Module, dataset, blocks: Optional[Sequence[int]] = None, k: int = 8,
               batch_size: int = 32, progress: bool = True) -> TopImages:
    """Every unit's top-``k`` images in one pass over ``dataset`` (all FFN units of the chosen
    blocks at once; no pass per unit): a running top-k merged batch by batch.

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        dataset: the stimuli; unreadable ones are skipped.
        blocks: 0-based blocks whose units are ranked; None: every block.
        k: images kept per unit.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        A :class:`TopImages` (values and indices [len(blocks), units, k], mean [len(blocks),
        units]).
    """
    from ..datasets.kinds import UNREADABLE
    from ..model.hooks import forward_to
    from ..stores.stimulus_loader import stimulus_loader
    from ..base.progress import with_progress

    layout = TokenLayout.of(model)
    blocks = list(range(len(model.blocks))) if blocks is None else [int(b) for b in blocks]
    device = next(model.parameters()).device
    best_v: Dict[int, torch.Tensor] = {}
    best_i: Dict[int, torch.Tensor] = {}
    total: Dict[int, torch.Tensor] = {}
    seen, count = 0, 0
    loader = stimulus_loader(dataset, model.vitcls_info.variant.preprocess, layout, batch_size,
                             device=device)
    sites = [f"blocks.{b}.mlp.hook_post" for b in blocks]
    with torch.no_grad():
        for batch in with_progress(loader, len(dataset), "top images", progress):
            ok = batch["status"] != UNREADABLE
            positions = torch.arange(seen, seen + len(ok))[ok]
            seen += len(ok)
            if not ok.any():
                continue
            values = forward_to(model, batch["image"][ok].to(device), sites)
            current = {b: values[site][:, -layout.n_patches:].mean(1)  # [B, U], patches
                       for b, site in zip(blocks, sites)}
            count += int(ok.sum())
            for b in blocks:
                acts = current[b].float().T  # [U, B]
                index = positions.to(device).expand_as(acts)
                if b in best_v:
                    acts = torch.cat([best_v[b], acts], 1)
                    index = torch.cat([best_i[b], index], 1)
                    total[b] = total[b] + current[b].float().sum(0)
                else:
                    total[b] = current[b].float().sum(0)
                top = acts.topk(min(k, acts.shape[1]), dim=1)
                best_v[b], best_i[b] = top.values, index.gather(1, top.indices)
    if not count:
        raise VitclsError("no readable image in the dataset")
    return TopImages(blocks=blocks,
                     values=torch.stack([best_v[b] for b in blocks]).cpu().numpy(),
                     indices=torch.stack([best_i[b] for b in blocks]).cpu().numpy(),
                     mean=torch.stack([total[b] / count for b in blocks]).cpu().numpy())


def patch_activation_map(model: nn.Module, images: torch.Tensor, block: int,
                         unit: int) -> torch.Tensor:
    """The unit's activation on each patch of preprocessed images [B, 3, S, S] -> [B, rows,
    columns] (Ghiasi's patch activation maps; [CLS] left out)."""
    from ..model.hooks import forward_to

    site = _unit_site(model, block, unit)
    layout = TokenLayout.of(model)
    with torch.no_grad():
        value = forward_to(model, images, [site])[site]
    return value[:, -layout.n_patches:, unit].reshape(-1, *layout.grid)


def unit_classes(model: nn.Module, block: int, unit: int, k: int = 5,
                 norm_scale: bool = False) -> List[int]:
    """The classes the unit's value vector (column ``unit`` of ``fc2.weight``) promotes most,
    projected with the head's class embeddings (optionally scaled by the final norm's weight):
    the unit read as a key-value memory (chapter 3)."""
    _unit_site(model, block, unit)
    value = model.blocks[block].mlp.fc2.weight[:, unit].detach().float().cpu().clone()
    if norm_scale and getattr(model.norm, "weight", None) is not None:
        value = value * model.norm.weight.detach().float().cpu()
    scores = model.head.weight.detach().float().cpu() @ value
    return scores.topk(min(k, scores.numel())).indices.tolist()


def strongest_units(top: TopImages, block: int, n: int = 4) -> List[int]:
    """The ``n`` units of ``block`` whose best image excites them most above their mean: where
    to look first when no unit is named."""
    row = top.blocks.index(block)
    lift = top.values[row, :, 0] - top.mean[row]
    return [int(u) for u in np.argsort(-lift)[:n]]


def _check_steps(recipe: Recipe) -> None:
    if recipe.steps < 1 or recipe.copies < 1:
        raise VitclsError("the recipe needs at least one step and one copy")
    if not math.isfinite(recipe.lr) or recipe.lr <= 0:
        raise VitclsError(f"the learning rate must be positive, not {recipe.lr}")
    noise_scale(recipe, 0)  # refuses an unknown schedule before any work


def unit_panels(model: nn.Module, dataset, top: TopImages, units: Sequence[tuple],
                recipe: Recipe = Recipe(), seed: int = 0, n_top: int = 4,
                class_names: Optional[Sequence[str]] = None, writes: int = 0) -> List[dict]:
    """What the figure of a unit shows, for each (block, unit): its visualisation, its top
    images as the model saw them, the activation map on the best one, a title (1-based block,
    as the book counts) and, with ``writes``, a caption naming the classes its value vector
    promotes most.

    Args:
        model: a loaded timm ViT (with ``vitcls_info`` and a class head for ``writes``).
        dataset: the stimuli ``top`` was computed on.
        top: :func:`top_images`'s result, holding the units' blocks.
        units: (0-based block, unit) pairs.
        recipe: the visualisation settings.
        seed: the visualisation's seed.
        n_top: top images shown per unit.
        class_names: class names, indexed by class; None: "class <c>".
        writes: how many promoted classes the caption names; 0: no caption.

    Returns:
        One dict per unit: ``image`` (visualisation, [3, S, S] in [0, 1]), ``top`` (uint8
        views [S, S, 3]), ``map`` (activation on the best image's patches, [rows, cols]),
        ``title``, ``top_titles`` (their classes), ``objective`` (per step), ``activation``
        (on the visualisation) and, with ``writes``, ``caption``.
    """
    preprocess = model.vitcls_info.variant.preprocess
    device = next(model.parameters()).device
    panels = []
    for block, unit in units:
        picture = visualize(model, block, unit, recipe, seed=seed)
        best = top.of(block, unit)[:n_top]
        x = torch.stack([preprocess(dataset.load(best[0])[0])]).to(device)
        labels = [dataset.labels[i] for i in best]
        panels.append({
            "image": picture.image.numpy(),
            "top": [preprocess.view(dataset.load(i)[0]) for i in best],
            "map": patch_activation_map(model, x, block, unit)[0].cpu().numpy(),
            "title": f"block {block + 1}, unit {unit}",
            "top_titles": [str(class_names[c]) if class_names else f"class {c}"
                           for c in labels],
            "objective": picture.objective, "activation": picture.activation})
        if writes:
            promoted = unit_classes(model, block, unit, writes)
            panels[-1]["caption"] = "writes: " + ",\n".join(
                str(class_names[c]) if class_names else f"class {c}" for c in promoted)
    return panels


def memory_agreement(model: nn.Module, dataset, top: TopImages, units: Sequence[tuple],
                     class_names: Sequence[str], k: int = 5) -> "pd.DataFrame":
    """Bridge 7: each unit's value vector read as a key-value memory (its top-``k`` classes
    through the head) beside the classes of its top images; ``agreement`` is the share of
    top images whose class is among the value vector's k, against ``chance`` = k / classes."""
    import pandas as pd

    classes = model.head.weight.shape[0]
    rows = []
    for block, unit in units:
        promoted = unit_classes(model, block, unit, k)
        shown = [dataset.labels[i] for i in top.of(block, unit)]
        rows.append({"block": block + 1, "unit": unit,
                     "value vector's classes": ", ".join(str(class_names[c]) for c in promoted),
                     "top images' classes": ", ".join(str(class_names[c]) for c in shown),
                     "agreement": float(np.mean([c in promoted for c in shown])),
                     "chance": k / classes})
    return pd.DataFrame(rows)
