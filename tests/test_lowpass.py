"""The low-pass filter keeps pure low frequencies and removes pure high ones, by cycles per image."""
import math

import pytest
import torch

from vitcls_utils.base.errors import VitclsError
from vitcls_utils.analysis.lowpass import frequency_mask, lowpass


def wave(size: int, ky: int, kx: int) -> torch.Tensor:
    """0.5 + 0.25 cos(2 pi (ky y + kx x) / size): ``ky``, ``kx`` cycles per image, in [0, 1]."""
    y = torch.arange(size, dtype=torch.float64)[:, None]
    x = torch.arange(size, dtype=torch.float64)[None, :]
    return (0.5 + 0.25 * torch.cos(2 * math.pi * (ky * y + kx * x) / size)).expand(3, -1, -1)


@pytest.mark.parametrize("shape", ["square", "disk"])
def test_keeps_low_removes_high(shape):
    low, high = wave(56, 2, 3), wave(56, 0, 20)
    torch.testing.assert_close(lowpass(low, 10, shape), low)
    torch.testing.assert_close(lowpass(high, 10, shape), torch.full_like(high, 0.5))
    mixed = lowpass((low + high) / 2, 10, shape)
    torch.testing.assert_close(mixed, (low + 0.5) / 2)


def test_square_and_disk_differ_on_the_diagonal_and_nyquist_is_identity():
    diagonal = wave(56, 9, 9)  # max 9 <= 10, but sqrt(162) > 10
    torch.testing.assert_close(lowpass(diagonal, 10, "square"), diagonal)
    torch.testing.assert_close(lowpass(diagonal, 10, "disk"), torch.full_like(diagonal, 0.5))
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lowpass(image, 16), image)
    torch.testing.assert_close(lowpass(image, 0), image.mean((-2, -1), keepdim=True)
                               .expand_as(image).clamp(0, 1))


def test_mask_counts_and_errors():
    assert int(frequency_mask(56, 56, 3).sum()) == 7 * 7
    assert int(frequency_mask(56, 56, 1, "disk").sum()) == 5
    with pytest.raises(VitclsError, match="shape"):
        frequency_mask(8, 8, 2, "ring")
    with pytest.raises(VitclsError, match="cycles"):
        frequency_mask(8, 8, -1)
