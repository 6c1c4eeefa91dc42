"""The per-block readout keeps each image's value: their mean is the frame's value exactly, and
each image's value is the rank of its true class counted here by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis.block_readout import COLUMNS, BlockReadout
from vitcls_utils.base.uncertainty import bootstrap
from vitcls_utils.base.errors import VitclsError


class FirstFeatures:
    """A stand-in class projection: the logits are a token's first ``num_classes`` features."""

    num_classes = 4

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[..., : self.num_classes]


def by_hand(tokens: np.ndarray, label: int):
    """[CLS] identifiability and rank-0, the image tokens' means: a plain loop."""
    def rank(logits):
        return sum(1 for value in logits if value > logits[label])

    ranks = [rank(token[:4]) for token in tokens]
    cls, image = ranks[0], ranks[1:]
    return (1 - cls / 4, 100.0 * (cls == 0), float(np.mean([1 - r / 4 for r in image])),
            100.0 * float(np.mean([r == 0 for r in image])))


def test_each_image_is_kept_and_their_mean_is_the_frame_value():
    generator = torch.Generator().manual_seed(0)
    readout = BlockReadout(FirstFeatures(), num_prefix=1, has_cls=True, n_patches=5)
    batches = [(torch.randn(3, 6, 4, generator=generator), torch.tensor([0, 1, 2])),
               (torch.randn(2, 6, 4, generator=generator), torch.tensor([3, 1]))]
    for tokens, labels in batches:
        readout.add("plain", 0, tokens, labels)
    row = readout.frame("edit").iloc[0]
    expected = np.array([by_hand(t.numpy(), int(y)) for tokens, labels in batches
                         for t, y in zip(tokens, labels)])
    for i, name in enumerate(COLUMNS):
        np.testing.assert_allclose(row[f"{name}_images"], expected[:, i], rtol=1e-6)
        assert row[name] == pytest.approx(expected[:, i].mean(), rel=1e-6)
        # the interval's point estimate is the table's mean, exactly
        assert bootstrap(row[f"{name}_images"]).estimate == row[name]


def test_without_cls_its_columns_are_nan_per_image_and_an_empty_readout_is_refused():
    readout = BlockReadout(FirstFeatures(), num_prefix=1, has_cls=False, n_patches=5)
    with pytest.raises(VitclsError, match="no readable image"):
        readout.frame()
    readout.add("a", 1, torch.randn(2, 6, 4), torch.tensor([0, 1]))
    row = readout.frame().iloc[0]
    assert row.block == 2 and np.isnan(row.cls_identifiability_images).all()
    interval = bootstrap(row.cls_identifiability_images)
    assert interval.n == 0 and interval.excluded == 2  # counted, never averaged
