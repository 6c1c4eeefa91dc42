"""Ghiasi's per-patch head readout is the store's last-block image-token identifiability."""
import numpy as np
import pytest
import torch

from vitcls_utils.analysis import patch_readout
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.stores.extraction import store_for
from vitcls_utils.model.loading import load_variant


def test_per_patch_readout_is_the_stores_identifiability(tiny_toy_variant, tmp_path):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=2)
    readout = patch_readout.patch_readout(model, data, batch_size=16, progress=False)
    store = store_for(tiny_toy_variant.key, dataset="toy", n_per_class=2,
                      results_dir=str(tmp_path), progress=False, device="cpu")
    rank = store.by_block("rank", "resid_post")[:, -1, store.num_prefix:]  # [I, N]
    np.testing.assert_allclose(readout.top1, 100 * (rank == 0).mean(0), atol=1e-4)
    np.testing.assert_allclose(readout.top5, 100 * (rank < 5).mean(0), atol=1e-4)
    assert readout.model_top1 == pytest.approx(100 * store.accuracy)
    summary = readout.summary()
    assert summary["patch_average_top1"] == pytest.approx(readout.top1.mean())
    assert summary["patch_maximum_top1"] == readout.top1.max()
    assert readout.heatmap().shape == (7, 7)


def test_pooled_token_is_the_head_on_the_mean_of_normed_tokens(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    readout = patch_readout.patch_readout(model, data, progress=False)
    with torch.no_grad():
        x = torch.stack([model.vitcls_info.variant.preprocess(data.load(i)[0])
                         for i in range(len(data))])
    assert readout.n_images == 24 and 0 <= readout.pooled_top1 <= 100
    # argmax top-1 per patch and of the pooled token, a second way
    with torch.no_grad():
        z = model.forward_features(x)  # already through model.norm
        hits = (model.head(z[:, 1:]).argmax(-1) == torch.tensor(data.labels)[:, None])
        pooled = (model.head(z[:, 1:].mean(1)).argmax(-1) == torch.tensor(data.labels))
    np.testing.assert_allclose(readout.top1, 100 * hits.float().mean(0).numpy(), atol=1e-4)
    assert readout.pooled_top1 == pytest.approx(100 * pooled.float().mean().item())


def test_each_images_outcomes_are_kept_and_average_to_the_table(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    readout = patch_readout.patch_readout(model, data, batch_size=10, progress=False)
    assert readout.patch_hits.shape == (24, 49) and readout.patch_hits.dtype == bool
    np.testing.assert_allclose(100 * readout.patch_hits.mean(0), readout.top1, atol=1e-4)
    average = readout.patch_average_images()
    assert average.mean() == pytest.approx(readout.summary()["patch_average_top1"], rel=1e-6)
    assert readout.model_top1_images.mean() == pytest.approx(readout.model_top1)
    assert readout.pooled_top1_images.mean() == pytest.approx(readout.pooled_top1)
    # each image's outcome a second way: the head's argmax on each of its own tokens
    with torch.no_grad():
        x = torch.stack([model.vitcls_info.variant.preprocess(data.load(i)[0])
                         for i in range(len(data))])
        z = model.forward_features(x)
        hits = model.head(z[:, 1:]).argmax(-1) == torch.tensor(data.labels)[:, None]
    assert np.array_equal(readout.patch_hits, hits.numpy())
