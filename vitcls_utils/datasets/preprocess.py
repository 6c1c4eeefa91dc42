"""Image preprocessing exactly as the paper used it, per variant (catalogue §2).

The geometric part (resize, crop) is a separate step so that segmentation masks can be put
through the same geometry as their image (with nearest-neighbour sampling) and stay aligned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported when an image is converted, not with the registry
    import torch

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize, optional center crop, scale to [0, 1], normalize.

    Attributes:
        resize: ``(height, width)`` resizes the whole image, ignoring aspect ratio (HF
            ``ViTImageProcessor``); an ``int`` resizes the short side to it, keeping the aspect
            ratio (torchvision ``Resize(int)``).
        crop: side of the center crop, or None for no crop.
        interpolation: "bilinear" or "bicubic" (PIL filters).
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel divisor.
        source: where this recipe comes from, for the variants table.
    """

    resize: Union[int, Tuple[int, int]]
    crop: Optional[int]
    interpolation: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    source: str = ""

    @property
    def output_size(self) -> Tuple[int, int]:
        """(height, width) of the preprocessed image."""
        if self.crop is not None:
            return (self.crop, self.crop)
        if isinstance(self.resize, int):
            raise ValueError("a short-side resize without a crop has no fixed output size")
        return tuple(self.resize)  # type: ignore[return-value]

    def resized_size(self, width: int, height: int) -> Tuple[int, int]:
        """(width, height) after the resize step, with torchvision's rounding for short-side."""
        if isinstance(self.resize, int):
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.resize, int(self.resize * long / short)
            return (new_short, new_long) if width <= height else (new_long, new_short)
        out_h, out_w = self.resize
        return (out_w, out_h)

    def crop_box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        """PIL crop box (left, top, right, bottom) of the center crop, torchvision's rounding."""
        assert self.crop is not None
        top = int(round((height - self.crop) / 2.0))
        left = int(round((width - self.crop) / 2.0))
        return (left, top, left + self.crop, top + self.crop)

    def geometry(self, image: Image.Image, resample: Optional[str] = None) -> Image.Image:
        """Apply resize and crop only. ``resample="nearest"`` is for label masks."""
        filt = _RESAMPLE[resample or self.interpolation]
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, resample=filt, reducing_gap=None)
        if self.crop is not None:
            image = image.crop(self.crop_box(*image.size))
        return image

    def view(self, image: Image.Image) -> np.ndarray:
        """The stimulus as the model sees it, before normalisation: uint8 RGB [H, W, 3]."""
        return np.asarray(self.geometry(image.convert("RGB")))

    def __call__(self, image: Image.Image) -> "torch.Tensor":
        """RGB PIL image -> float32 tensor [3, H, W], normalized."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.normalise(np.asarray(self.geometry(image)))

    def normalise(self, pixels: np.ndarray) -> "torch.Tensor":
        """uint8 RGB [H, W, 3] after the geometry (a :meth:`view`) -> the normalised float32
        tensor [3, H, W]: the second half of ``__call__``, used on cached stimuli."""
        array = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        array = (array - mean) / std
        import torch

        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def describe(self) -> str:
        """One line for the variants table."""
        if isinstance(self.resize, int):
            size = f"short side {self.resize}"
        else:
            size = f"{self.resize[0]}x{self.resize[1]} (aspect ignored)"
        crop = f", crop {self.crop}" if self.crop is not None else ", no crop"
        norm = f", mean {fmt(self.mean)} std {fmt(self.std)}"
        return f"{self.interpolation} {size}{crop}{norm}"


def fmt(values: Tuple[float, ...]) -> str:
    """Compact tuple formatting: (0.5,) when all equal, else the full tuple."""
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


# The recipes of catalogue §2.
HF_VIT = Preprocess(
    resize=(224, 224), crop=None, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="HF ViTImageProcessor (google/vit-*-in21k)",
)
MIIL = Preprocess(
    resize=256, crop=224, interpolation="bilinear",
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    source="timm 0.6.12 eval transform (crop_pct 0.875)",
)
CIFAR = Preprocess(
    resize=(224, 224), crop=224, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="torchvision Resize((224,224)) + CenterCrop(224) (a no-op)",
)
DEIT_REFINEMENT = Preprocess(
    resize=(256, 256), crop=224, interpolation="bicubic",
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    source="HF DeiTImageProcessor (facebook/deit-base-distilled-patch16-224)",
)
# The original ViT checkpoints (chapter 5; catalogue §7).
BIG_VISION_FEWSHOT = Preprocess(
    resize=(256, 256), crop=224, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="big_vision few-shot eval: resize(256)|central_crop(224)|value_range(-1,1)",
)
TIMM_ORIG_224 = Preprocess(
    resize=248, crop=224, interpolation="bicubic",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="timm eval transform of the orig_in21k_ft_in1k weights (crop_pct 0.9)",
)
TIMM_ORIG_384 = Preprocess(
    resize=384, crop=384, interpolation="bicubic",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="timm eval transform of the 384-px orig_in21k_ft_in1k weights (crop_pct 1.0)",
)
# Ghiasi et al. (chapter 6; catalogue §8): their loader resizes the short side and center-crops
# with torchvision's default bilinear filter; the ViTs normalise to [-1, 1] inside the model.
GHIASI_VIT_384 = Preprocess(
    resize=384, crop=384, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    source="Ghiasi et al.'s loader: Resize(384) + CenterCrop(384), mean = std = 0.5",
)
GHIASI_CNN_224 = Preprocess(
    resize=224, crop=224, interpolation="bilinear",
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    source="Ghiasi et al.'s CNNs: Resize(224) + CenterCrop(224), ImageNet mean/std",
)
CLIP_OPENAI = Preprocess(
    resize=224, crop=224, interpolation="bicubic",
    mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
    source="timm eval transform of the OpenAI CLIP towers (crop_pct 1.0, CLIP mean/std)",
)
# ConViT and its DeiT baselines (chapter 7): the DeiT evaluation transform both repositories use.
DEIT_EVAL = Preprocess(
    resize=256, crop=224, interpolation="bicubic",
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    source="DeiT eval transform: Resize(256, bicubic) + CenterCrop(224), ImageNet mean/std",
)
