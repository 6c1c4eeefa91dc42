"""A tuned class-space lens (chapter 8): per block and token kind, an affine translator put
before the model's own final norm and head, trained so that its readout matches the model's
final class distribution.

The translator of block ``l`` and kind ``k`` maps a residual ``x`` to ``x + W x + b`` with
``W`` and ``b`` zero at the start: step 0 is the plain class-space readout, bit for bit. It is
trained on the residuals ``blocks.{l}.hook_resid_post`` of a training split, to minimise
``KL(final || lens)``, where ``final`` is the model's output distribution for the image; it is
evaluated on held-out images. Kinds: ``cls`` (the [CLS] token) and ``image`` (image tokens; a
fixed, seeded sample of them per image while training, every one when decoding). Every
translator trains at once (one batched matmul per step), so the same code runs on a GPU.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from .. import _compat
from ..base.errors import VitclsError
from ..model.hooks import capture
from ..model.layout import TokenLayout
from ..model.projection import ClassProjector
from ..stores.stimulus_loader import labelled_batches

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

KINDS = ("cls", "image")


@dataclass
class LensData:
    """Residuals and final distributions of a set of images.

    Attributes:
        features: {kind: [L, M, D]} residual after each block (M rows: one per image for
            ``cls``, ``tokens_per_image`` per image for ``image``).
        rows: {kind: [M]} which image each row comes from; final: [I, C] the model's final
            log-probabilities; labels: [I]; description: what the images are
            (:func:`describe`); tokens_per_image: image tokens kept per image.
    """

    features: Dict[str, torch.Tensor]
    rows: Dict[str, torch.Tensor]
    final: torch.Tensor
    labels: torch.Tensor
    description: str = ""
    tokens_per_image: int = 0


def kinds_of(model: nn.Module) -> List[str]:
    """The token kinds a model has: ``cls`` and ``image``, or ``image`` alone (no [CLS])."""
    return list(KINDS) if TokenLayout.of(model).has_cls else ["image"]


@torch.no_grad()
def collect(model: nn.Module, dataset, tokens_per_image: int = 8, batch_size: int = 32,
            seed: int = 0, description: Optional[str] = None) -> LensData:
    """Every block's residual of ``dataset``'s images, and the model's final distribution.

    Args:
        model: a loaded variant (``load_variant``), with a class head.
        dataset: an image dataset (e.g. ``ToyDataset(split="train")``).
        tokens_per_image: image tokens kept per image (a seeded sample; all when fewer).
        batch_size: images per forward pass.
        seed: the sample's seed.
        description: what the images are (for the model card); default the dataset's name.

    Returns:
        A :class:`LensData` (features on the CPU, float32).
    """
    layout = TokenLayout.of(model)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(len(model.blocks))]
    generator = torch.Generator().manual_seed(seed)
    feats: Dict[str, list] = {k: [] for k in kinds_of(model)}
    rows: Dict[str, list] = {k: [] for k in feats}
    finals, labels, seen = [], [], 0
    for images, batch_labels in labelled_batches(model, dataset, batch_size, "lens", False):
        with capture(model, sites, device="cpu") as cache:
            logits = model(images).float().cpu()
        stack = torch.stack([cache[s].float() for s in sites])                # [L, B, N, D]
        batch = stack.shape[1]
        if "cls" in feats:
            feats["cls"].append(stack[:, :, 0])
            rows["cls"].append(torch.arange(seen, seen + batch))
        patches = stack[:, :, layout.num_prefix:]
        n_patch = patches.shape[2]
        keep = min(tokens_per_image, n_patch)
        pick = torch.stack([torch.randperm(n_patch, generator=generator)[:keep]
                            for _ in range(batch)])                           # [B, keep]
        chosen = patches[:, torch.arange(batch)[:, None], pick]               # [L, B, keep, D]
        feats["image"].append(chosen.flatten(1, 2))
        rows["image"].append(torch.arange(seen, seen + batch).repeat_interleave(keep))
        finals.append(F.log_softmax(logits, -1))
        labels.append(batch_labels.cpu())
        seen += batch
    if not seen:
        raise VitclsError("no readable images to train or evaluate the lens on")
    return LensData({k: torch.cat(v, 1) for k, v in feats.items()},
                    {k: torch.cat(v) for k, v in rows.items()}, torch.cat(finals),
                    torch.cat(labels), description or describe(dataset), tokens_per_image)


def describe(dataset) -> str:
    """``name/split, n images`` of a dataset (the model card's training split)."""
    split = getattr(dataset, "split", None)
    name = getattr(dataset, "name", type(dataset).__name__)
    return f"{name}/{split}, {len(dataset)} images" if split else f"{name}, {len(dataset)} images"


class TunedLens(nn.Module):
    """Affine translators [K kinds, L blocks] before the model's own readout.

    Args:
        model: the model whose readout (final norm and head) the lens ends in.
        kinds: token kinds (default: those the model has).
    """

    def __init__(self, model: nn.Module, kinds: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.kinds = list(kinds or kinds_of(model))
        depth, dim = len(model.blocks), int(model.embed_dim)
        self.weight = nn.Parameter(torch.zeros(len(self.kinds), depth, dim, dim))
        self.bias = nn.Parameter(torch.zeros(len(self.kinds), depth, dim))
        self.projector = ClassProjector(model)
        self.card: dict = {"model": _identity(model), "kinds": self.kinds,
                           "sites": [f"blocks.{i}.hook_resid_post" for i in range(depth)]}

    def translate(self, kind: str, x: torch.Tensor, block: Optional[int] = None) -> torch.Tensor:
        """x + W x + b. x: [L, ..., D] (every block) or [..., D] with ``block`` given."""
        k = self.kinds.index(kind)
        w, b = self.weight[k], self.bias[k]
        if block is not None:
            return x + x @ w[block].T + b[block]
        shape = x.shape
        flat = x.reshape(shape[0], -1, shape[-1])
        return (flat + torch.bmm(flat, w.transpose(1, 2)) + b[:, None]).reshape(shape)

    def logits(self, kind: str, x: torch.Tensor, block: Optional[int] = None) -> torch.Tensor:
        """Class logits of residuals through the translator and the model's readout.

        Args:
            kind: ``cls`` or ``image``.
            x: residuals [L, ..., D] of every block, or [..., D] of ``block``.
            block: the block when ``x`` is one block's.

        Returns:
            Logits [..., C] with the leading shape of ``x``.
        """
        return self.projector(self.translate(kind, x.float(), block))


def _identity(model: nn.Module) -> dict:
    info = getattr(model, "vitcls_info", None)
    if info is None:
        return {"variant": type(model).__name__, "weights_id": "unknown"}
    return {"variant": info.variant.key, "weights_id": info.weights_id}


def _kl(final: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(final || lens) per row: final [..., C] log-probs, logits [..., C] -> [...]."""
    return (final.exp() * (final - F.log_softmax(logits, -1))).sum(-1)


def train_lens(model: nn.Module, data: LensData, steps: int = 200, lr: float = 1e-3,
               batch_rows: int = 512, seed: int = 0, weight_decay: float = 0.0) -> TunedLens:
    """Train every translator at once to minimise KL(final || lens) on ``data``.

    Args:
        model: the model the data came from.
        data: training residuals (:func:`collect`).
        steps: Adam steps; 0 leaves the identity (the plain readout).
        lr: Adam's learning rate; batch_rows: rows per kind per step; seed: sampling seed.
        weight_decay: AdamW's decoupled decay (0: none).

    Returns:
        The trained :class:`TunedLens`, its ``card`` filled in (steps, seed, time, split).
    """
    lens = TunedLens(model, kinds=list(data.features))
    device = next(model.parameters()).device
    lens.to(device)
    optim = torch.optim.AdamW([lens.weight, lens.bias], lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        loss = 0.0
        for kind, feats in data.features.items():
            pick = torch.randint(feats.shape[1], (min(batch_rows, feats.shape[1]),),
                                 generator=generator)
            x = feats[:, pick].to(device)
            target = data.final[data.rows[kind][pick]].to(device)
            loss = loss + _kl(target, lens.logits(kind, x)).mean(-1).sum()
        optim.zero_grad()
        loss.backward()
        optim.step()
    lens.card.update(steps=steps, lr=lr, batch_rows=batch_rows, seed=seed,
                     weight_decay=weight_decay, training_split=data.description,
                     tokens_per_image=data.tokens_per_image,
                     n_train_images=int(len(data.labels)),
                     train_seconds=round(time.perf_counter() - start, 3))
    return lens.eval().requires_grad_(False)


@torch.no_grad()
def compare(lens: TunedLens, data: LensData) -> pd.DataFrame:
    """Plain and tuned readouts per block and kind on (held-out) ``data``.

    Args:
        lens: a trained lens.
        data: held-out residuals (:func:`collect`).

    Returns:
        DataFrame, a row per (kind, block (1-based), readout in plain/tuned): ``kl`` (mean
        KL(final || readout), nats), ``agreement`` (share of rows whose top-1 is the final
        prediction), ``top1`` (share whose top-1 is the label); and the same per image,
        ``kl_images``, ``agreement_images``, ``top1_images`` (each an [I] array: the image's
        mean over its rows; every image has as many rows, so their mean is the pooled value).
    """
    out = []
    device = lens.weight.device
    n_images = len(data.labels)
    for kind, feats in data.features.items():
        rows = data.rows[kind]
        final = data.final[rows].to(device)
        label = data.labels[rows].to(device)
        x = feats.to(device)
        for name, logits in (("plain", lens.projector(x)), ("tuned", lens.logits(kind, x))):
            measures = {"kl": _kl(final, logits),
                        "agreement": (logits.argmax(-1) == final.argmax(-1)).float(),
                        "top1": (logits.argmax(-1) == label).float()}                # [L, M]
            pooled = {k: v.mean(-1).cpu().numpy() for k, v in measures.items()}
            images = {k: per_image(v.cpu(), rows, n_images) for k, v in measures.items()}
            out += [{"kind": kind, "block": i + 1, "readout": name,
                     **{k: float(v[i]) for k, v in pooled.items()},
                     **{f"{k}_images": v[i] for k, v in images.items()}}
                    for i in range(len(pooled["kl"]))]
    return pd.DataFrame(out)


def per_image(values: torch.Tensor, rows: torch.Tensor, n_images: int):
    """Each image's mean of a per-row measure.

    Args:
        values: [L, M] one value per block and row; rows: [M] the image of each row;
        n_images: I.

    Returns:
        numpy [L, I] float64 (NaN for an image without rows).
    """
    values = values.double()
    sums = torch.zeros(values.shape[0], n_images, dtype=torch.float64).index_add_(
        1, rows, values)
    counts = torch.bincount(rows, minlength=n_images).double()
    return (sums / counts).numpy()


def held_out_summary(table: pd.DataFrame) -> dict:
    """The model card's numbers: mean held-out KL over blocks per kind and readout.

    Args:
        table: :func:`compare`'s table (probe rows, if any, are ignored).

    Returns:
        {kind: {"plain": nats, "tuned": nats}}.
    """
    means = table.groupby(["kind", "readout"])["kl"].mean()
    return {kind: {r: round(float(means[(kind, r)]), 6) for r in ("plain", "tuned")}
            for kind in table["kind"].unique()}


def save_lens(lens: TunedLens, path, held_out: Optional[dict] = None) -> Path:
    """Write the translators (safetensors) and the model card (``<path>.json``).

    Args:
        lens: the lens; path: the ``.safetensors`` file to write.
        held_out: the held-out KL summary (:func:`held_out_summary`) for the card.

    Returns:
        The card's path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": lens.weight.detach().cpu().contiguous(),
               "bias": lens.bias.detach().cpu().contiguous()}, str(path))
    card = dict(lens.card, format="vitcls tuned class-space lens v1",
                held_out_kl=held_out if held_out is not None else lens.card.get("held_out_kl"))
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    return card_path


def load_lens(model: nn.Module, path) -> TunedLens:
    """Read a lens saved by :func:`save_lens` for ``model`` (its card must name this model).

    Args:
        model: the loaded variant the lens was trained on.
        path: the ``.safetensors`` file (its card beside it).

    Returns:
        The :class:`TunedLens`, in eval mode on the model's device.

    Raises:
        VitclsError: a missing file, another model, or shapes that do not fit.
    """
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise VitclsError(f"no tuned lens at {path} (and its card {card_path.name}); train one "
                          "with vitcls_utils.analysis.tuned_lens.train_lens and save_lens")
    card = json.loads(card_path.read_text())
    if card["model"] != _identity(model):
        raise VitclsError(f"the lens at {path} was trained on {card['model']}, not on "
                          f"{_identity(model)}: train one for this model")
    lens = TunedLens(model, kinds=card["kinds"])
    tensors = load_file(str(path))
    if tensors["weight"].shape != lens.weight.shape:
        raise VitclsError(f"the lens at {path} has translators {tuple(tensors['weight'].shape)}"
                          f", this model needs {tuple(lens.weight.shape)}")
    with torch.no_grad():
        lens.weight.copy_(tensors["weight"])
        lens.bias.copy_(tensors["bias"])
    lens.card = card
    return lens.to(next(model.parameters()).device).eval().requires_grad_(False)
