"""Edited stimuli, evaluated in one streamed pass (chapter 6): the full image, its foreground or
background only (:mod:`vitcls_utils.analysis.foreground_background`), and low-pass versions
(:mod:`vitcls_utils.analysis.lowpass`).

An edit acts where its definition says: foreground/background at the original resolution
(before resize and crop), the low-pass filter on the [0, 1] image after them (before the
normalisation). Every edit of an image is made in the loader workers and forwarded on the same
batch, so one pass over the data serves a whole table or curve, for a ViT (its output, and per
block through the class projection) or a CNN (its output).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .. import _compat, _moved
from ..base.errors import DatasetError, VitclsError
from .foreground_background import split_foreground
from .lowpass import lowpass
from ..datasets.preprocess import Preprocess

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402


@dataclass(frozen=True)
class Edit:
    """One way to change a stimulus.

    Attributes:
        name: its column in the results ("full", "foreground", "lowpass 14", ...).
        region: "full", "foreground" or "background" (needs a mask).
        cutoff: low-pass cutoff in cycles per image, or None for no filter.
        shape: the low-pass window, "square" or "disk".
    """

    name: str
    region: str = "full"
    cutoff: Optional[float] = None
    shape: str = "square"


FULL = Edit("full")
FOREGROUND = Edit("foreground", region="foreground")
BACKGROUND = Edit("background", region="background")


def lowpass_edits(cutoffs: Sequence[float], shape: str = "square") -> List[Edit]:
    """The full image, then one low-pass edit per cutoff (Ghiasi et al.'s decay curve).

    Args:
        cutoffs: low-pass cutoffs, in cycles per image.
        shape: the low-pass window, "square" or "disk".

    Returns:
        :data:`FULL`, then an :class:`Edit` named "lowpass <cutoff>" per cutoff, in order.
    """
    return [FULL] + [Edit(f"lowpass {c:g}", cutoff=float(c), shape=shape) for c in cutoffs]


def _to_tensor(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    """Resize and crop, then [0, 1] float [3, H, W] (not yet normalised)."""
    array = preprocess.view(image).astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def normalize(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The variant's mean/std on [.., 3, H, W] images in [0, 1]."""
    mean = torch.tensor(preprocess.mean, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def apply(edit: Edit, image: Image.Image, preprocess: Preprocess,
          object_mask: Optional[np.ndarray] = None) -> torch.Tensor:
    """One edited, preprocessed stimulus [3, H, W], normalised as the variant expects."""
    return apply_all([edit], image, preprocess, object_mask)[0]


def apply_all(edits: Sequence[Edit], image: Image.Image, preprocess: Preprocess,
              object_mask: Optional[np.ndarray] = None) -> List[torch.Tensor]:
    """Every edit of one image, each region cut and transformed once (one FFT per region for
    all its cutoffs)."""
    bases: Dict[str, tuple] = {}
    out = []
    for edit in edits:
        if edit.region not in bases:
            region = image
            if edit.region != "full":
                if object_mask is None:
                    raise DatasetError(f"the {edit.region} edit needs an object mask")
                fg, bg = split_foreground(np.asarray(image.convert("RGB")), object_mask)
                region = Image.fromarray(fg if edit.region == "foreground" else bg)
            bases[edit.region] = (_to_tensor(region, preprocess), None)
        x, spectrum = bases[edit.region]
        if edit.cutoff is not None:
            if spectrum is None:
                spectrum = torch.fft.fft2(x.double())
                bases[edit.region] = (x, spectrum)
            x = lowpass(x, edit.cutoff, edit.shape, spectrum=spectrum)
        out.append(normalize(x, preprocess))
    return out


class EditedStimuli(torch.utils.data.Dataset):
    """Every edit of each readable stimulus (images with no mask skip the region edits)."""

    def __init__(self, dataset, preprocess: Preprocess, edits: Sequence[Edit]) -> None:
        self.dataset, self.preprocess, self.edits = dataset, preprocess, list(edits)
        self.needs_mask = any(e.region != "full" for e in self.edits)
        if self.needs_mask and not dataset.has_masks:
            raise DatasetError("foreground/background edits need a dataset with object masks "
                               "(the toy, ImageNet-S, or ImageNet with boxes)")
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict[str, object]:
        size = (3,) + tuple(self.preprocess.output_size)
        if self.needs_mask:
            image, _, ids, category = self.dataset.load_with_mask(i)
            mask = None if ids is None or category is None else ids == category
        else:
            (image, _), mask = self.dataset.load(i), None
        ok = image is not None and (mask is not None or not self.needs_mask)
        out = {"label": self.labels[i], "ok": ok,
               "object_share": float(mask.mean()) if mask is not None else float("nan")}
        edited = apply_all(self.edits, image, self.preprocess, mask) if ok else None
        for k in range(len(self.edits)):
            out[f"x{k}"] = edited[k] if ok else torch.zeros(size)
        return out


def evaluate_edits(model: nn.Module, dataset, edits: Sequence[Edit],
             preprocess: Optional[Preprocess] = None, by_block: bool = False,
             batch_size: int = 32, num_workers: Optional[int] = None,
             progress: bool = True) -> Dict[str, pd.DataFrame]:
    """Top-1 and top-5 (%) of the model's output under every edit; with ``by_block`` (ViTs
    with a head), also per block the identifiability and top-1 rate of [CLS] (when there is
    one) and of the image tokens through the class projection.

    Args:
        model: a timm ViT or CNN in eval mode.
        dataset: the stimuli (with object masks for region edits); images that cannot be read
            (or have no mask, for region edits) are skipped.
        edits: the :class:`Edit` list, each with a distinct name.
        preprocess: the model's preprocessing; None: its variant's (a ``load_variant`` model).
        by_block: also read every block through the class projection (a ViT with a head).
        batch_size: images per batch (each forwarded once per edit).
        num_workers: loader worker processes; None: chosen for the device.
        progress: show a progress bar.

    Returns:
        {"accuracy": DataFrame, a row per edit: ``edit``, ``region``, ``cutoff``, ``top1``,
        ``top5`` (%), ``images`` (count), ``top1_images`` and ``top5_images`` (each an
        [images] array, 100 where the image is right, else 0; the same images in the same
        order for every edit), with ``attrs["object_share"]``, the mean fraction of
        the image the object covers; "blocks": with ``by_block``, a row per (edit, block):
        ``edit``, ``block`` (1-based), ``cls_identifiability``, ``cls_top1``,
        ``image_identifiability``, ``image_top1``, else an empty DataFrame}.
    """
    from .block_readout import readout_for
    from ..model.hooks import hooks
    from ..model.projection import top1_top5
    from ..stores.stimulus_loader import workers
    from ..base.progress import with_progress

    variant = getattr(getattr(model, "vitcls_info", None), "variant", None)
    preprocess = preprocess or (variant.preprocess if variant is not None else None)
    if preprocess is None:
        raise VitclsError("give the preprocessing of a model not loaded through load_variant")
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(
        EditedStimuli(dataset, preprocess, edits), batch_size=batch_size, shuffle=False,
        num_workers=workers(num_workers, device), pin_memory=device.type == "cuda")
    if by_block and not (hasattr(model, "blocks") and hasattr(model, "patch_embed")):
        raise VitclsError("per-block class identifiability needs a ViT; this model is a CNN")
    depth = len(model.blocks) if by_block else 0
    readout = readout_for(model) if by_block else None
    sites = [f"blocks.{b}.hook_resid_post" for b in range(depth)]
    rows: Dict[int, torch.Tensor] = {}

    def keep(value: torch.Tensor, name: str) -> None:
        rows[int(name.split(".")[1])] = value

    hits: Dict[str, List[torch.Tensor]] = {e.name: [] for e in edits}
    shares: List[float] = []
    count = 0
    with torch.no_grad(), hooks(model, [(sites, keep)] if sites else []):
        for batch in with_progress(loader, len(dataset), "edits", progress):
            ok = batch["ok"]
            if not ok.any():
                continue
            labels = batch["label"][ok].to(device)
            count += len(labels)
            shares += batch["object_share"][ok].tolist()
            for k, edit in enumerate(edits):
                logits = model(batch[f"x{k}"][ok].to(device))
                hits[edit.name].append(top1_top5(logits, labels).cpu())
                for b in range(depth):
                    readout.add(edit.name, b, rows[b], labels)
    if not count:
        raise DatasetError("no readable image (with a mask, for region edits) in the dataset")
    accuracy = []
    for edit in edits:
        hit = 100 * torch.cat(hits[edit.name]).double()
        mean = hit.mean(0)
        accuracy.append({"edit": edit.name, "region": edit.region, "cutoff": edit.cutoff,
                         "top1": float(mean[0]), "top5": float(mean[1]), "images": count,
                         "top1_images": hit[:, 0].numpy(), "top5_images": hit[:, 1].numpy()})
    frame = pd.DataFrame(accuracy)
    shares = [v for v in shares if v == v]  # NaN: no mask was read for that image
    frame.attrs["object_share"] = float(np.mean(shares)) if shares else float("nan")
    blocks = readout.frame("edit") if by_block else pd.DataFrame()
    return {"accuracy": frame, "blocks": blocks}


#: the old names, until user code has moved (FutureWarning)
__getattr__ = _moved.renamed(__name__, {"evaluate": "evaluate_edits"})
