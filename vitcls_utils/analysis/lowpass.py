"""The low-pass filter of chapter 6 (Ghiasi et al.'s high-frequency removal; catalogue G7).

The paper released no code for it, so the book defines it: per channel, the 2-D FFT of the
[0, 1] image after resize and crop; every frequency outside a centred square (or disk) of
half-width ``cutoff`` *cycles per image* set to zero; the real part of the inverse, clamped to
[0, 1]. Cycles per image are absolute, so a 384-px and a 224-px model see the same content.
"""
from __future__ import annotations

from typing import Optional

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402

SHAPES = ("square", "disk")
#: the default sweep for ImageNet-sized inputs (cycles per image)
IMAGENET_CUTOFFS = (112, 80, 56, 40, 28, 20, 14, 10, 7)


def frequency_mask(height: int, width: int, cutoff: float, shape: str = "square"
                   ) -> torch.Tensor:
    """[H, W] booleans in ``torch.fft.fft2`` order: True where the frequency is kept.

    A frequency (ky, kx) in cycles per image is kept when max(|ky|, |kx|) <= cutoff (square)
    or ky² + kx² <= cutoff² (disk)."""
    if shape not in SHAPES:
        raise VitclsError(f"low-pass shape must be one of {SHAPES}, not {shape!r}")
    if not cutoff >= 0:
        raise VitclsError(f"the cutoff is a number of cycles per image >= 0, not {cutoff!r}")
    ky = torch.fft.fftfreq(height, d=1.0 / height).abs()[:, None]
    kx = torch.fft.fftfreq(width, d=1.0 / width).abs()[None, :]
    if shape == "square":
        return (ky <= cutoff) & (kx <= cutoff)
    return ky ** 2 + kx ** 2 <= cutoff ** 2


def lowpass(images: torch.Tensor, cutoff: float, shape: str = "square",
            spectrum: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Keep the frequencies of [..., H, W] images in [0, 1] up to ``cutoff`` cycles per image;
    the result clamped to [0, 1]. A cutoff at or above the Nyquist frequency is the identity
    (up to float rounding). ``spectrum``: the images' ``fft2`` in float64, when already known
    (one transform serves every cutoff)."""
    height, width = images.shape[-2:]
    keep = frequency_mask(height, width, cutoff, shape).to(images.device)
    if spectrum is None:
        spectrum = torch.fft.fft2(images.double())
    filtered = torch.fft.ifft2(spectrum * keep).real
    return filtered.clamp(0.0, 1.0).to(images.dtype)
