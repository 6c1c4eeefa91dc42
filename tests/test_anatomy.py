"""ViT anatomy against second computations: loops, numpy's SVD, hand-built embeddings, and a
hand-multiplied rollout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_model

from vitcls_utils.analysis import anatomy, explanation_maps as explain
from vitcls_utils.model.hooks import hooks


def random_attention(batch=2, heads=3, prefix=1, grid=(3, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = prefix + grid[0] * grid[1]
    return torch.rand(batch, heads, n, n, generator=gen).softmax(-1)


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_mean_attention_distance_equals_a_double_loop(prefix):
    grid = (3, 4)
    attn = random_attention(prefix=prefix, grid=grid)
    got = anatomy.mean_attention_distance(attn, grid, num_prefix=prefix)
    renorm = anatomy.mean_attention_distance(attn, grid, num_prefix=prefix, prefix="renormalize")
    pixels = anatomy.mean_attention_distance(attn, grid, num_prefix=prefix, patch_size=16)
    cells = [(r, c) for r in range(grid[0]) for c in range(grid[1])]
    for b in range(attn.shape[0]):
        for h in range(attn.shape[1]):
            total = total_renorm = 0.0
            for i, (ri, ci) in enumerate(cells):
                row = attn[b, h, prefix + i, prefix:].double()
                spans = [row[j] * math.hypot(ri - rj, ci - cj) for j, (rj, cj) in
                         enumerate(cells)]
                total += sum(spans)
                total_renorm += sum(spans) / row.sum()
            assert got[b, h].item() == pytest.approx(total / len(cells))
            assert renorm[b, h].item() == pytest.approx(total_renorm / len(cells))
            assert pixels[b, h].item() == pytest.approx(16 * total / len(cells))
    if prefix == 0:
        torch.testing.assert_close(got, renorm)  # nothing to renormalize


def test_uniform_attention_has_the_mean_pairwise_distance():
    grid = (4, 4)
    uniform = torch.full((1, 1, 16, 16), 1 / 16)
    pairs = [math.hypot(a // 4 - b // 4, a % 4 - b % 4) for a in range(16) for b in range(16)]
    got = anatomy.mean_attention_distance(uniform, grid, num_prefix=0)
    assert got.item() == pytest.approx(sum(pairs) / 256)


def test_bad_shapes_and_policies_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        anatomy.mean_attention_distance(random_attention(), (4, 4))
    with pytest.raises(ValueError, match="prefix must be one of"):
        anatomy.mean_attention_distance(random_attention(), (3, 4), prefix="keep")


def test_patch_embedding_components_equal_numpy_svd():
    weight = torch.randn(20, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    components, share = anatomy.patch_embedding_components(weight, k=5)
    rows = weight.reshape(20, -1).numpy().astype(np.float64)
    _, singular, vt = np.linalg.svd(rows - rows.mean(0), full_matrices=False)
    for got, expected in zip(components.reshape(5, -1).numpy(), vt[:5], strict=True):
        assert abs(np.dot(got, expected)) == pytest.approx(1.0)  # same axis, either sign
    np.testing.assert_allclose(share.numpy(), singular[:5] ** 2 / (singular ** 2).sum())


def test_position_similarity_of_a_known_embedding():
    grid = (2, 3)
    rows = torch.zeros(6, 4)
    rows[:, 0] = 1.0
    rows[3:, 1] = 1.0  # the second grid row leans on a second axis: cosine 1/sqrt(2) across
    similarity = anatomy.position_similarity(rows, grid)
    assert similarity.shape == (2, 3, 2, 3)
    assert similarity[0, 0, 0, 2].item() == pytest.approx(1.0)
    assert similarity[0, 0, 1, 1].item() == pytest.approx(1 / math.sqrt(2))
    model = tiny_model("cls")
    table = anatomy.patch_position_embeddings(model)
    assert table.shape[0] == model.patch_embed.num_patches
    torch.testing.assert_close(table, model.pos_embed[0, 1:].detach())


def test_rollout_equals_a_hand_multiplied_product():
    first, second = random_attention(seed=1), random_attention(seed=2)
    n = first.shape[-1]
    eye = torch.eye(n)

    def step(a, residual):
        mixed = residual * eye + (1 - residual) * a.mean(1)
        return mixed / mixed.sum(-1, keepdim=True)

    expected = step(second, 0.5) @ step(first, 0.5)
    torch.testing.assert_close(anatomy.rollout([first, second]), expected)
    plain = second.mean(1) @ first.mean(1)
    torch.testing.assert_close(anatomy.rollout([first, second], residual=None), plain)


def test_explain_rollout_is_the_anatomy_rollout():
    model = tiny_model("cls")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    patterns = []
    names = [f"blocks.{b}.attn.hook_pattern" for b in range(len(model.blocks))]
    with torch.no_grad(), hooks(model, [(names, lambda v, n: patterns.append(v))]):
        model(images)
    expected = anatomy.rollout(patterns)[:, 0, 1:]
    torch.testing.assert_close(explain.rollout_maps(model, images), expected)


def test_attention_distances_over_a_dataset_equal_a_per_image_loop():
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.model.hooks import run_with_cache
    from vitcls_utils.model.loading import load_variant

    model = load_variant("toy")
    stimuli = build_dataset("toy", None, num_classes=24, n_per_class=1)
    frame = anatomy.attention_distances(model, stimuli, n_images=5, prefix="renormalize",
                                        batch_size=2, progress=False)
    preprocess = model.vitcls_info.variant.preprocess
    totals = torch.zeros(12, 4, dtype=torch.float64)
    each = torch.zeros(5, 12, 4, dtype=torch.float64)
    for i in range(5):
        _, cache = run_with_cache(model, preprocess(stimuli.load(i)[0])[None])
        for b in range(12):
            pattern = cache[f"blocks.{b}.attn.hook_pattern"][0]
            for h in range(4):  # by hand: prefix left out, rows renormalised, 8-pixel patches
                patches = pattern[h, 1:, 1:].double()
                patches = patches / patches.sum(-1, keepdim=True)
                each[i, b, h] = 8 * (patches * anatomy.patch_distances((7, 7))).sum(-1).mean()
                totals[b, h] += each[i, b, h]
    got = torch.tensor(frame.distance.values).reshape(12, 4)
    torch.testing.assert_close(got, totals / 5)
    # each image's distance is kept, in the order read, and their mean is the table's
    per_image = torch.tensor(np.stack(frame.distance_images.values)).reshape(12, 4, 5)
    torch.testing.assert_close(per_image.permute(2, 0, 1), each)
    assert all(v.mean() == d for v, d in zip(frame.distance_images, frame.distance))
    blocks = anatomy.distance_per_image(frame)  # each image's mean over a block's heads
    np.testing.assert_allclose(blocks[3], each[:, 2].mean(1).numpy())
    assert frame.block.min() == 1 and (frame["head"].min(), frame["head"].max()) == (1, 4)


def test_architecture_rows_count_what_timm_builds():
    import timm

    from vitcls_utils.model.registry import get_variant

    row = anatomy.architecture_row("vit_tiny_patch16_224", num_classes=10)
    real = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    assert row == {"layers": 12, "width": 192, "mlp": 768, "heads": 3,
                   "parameters": sum(p.numel() for p in real.parameters())}
    toy = anatomy.architecture_row(get_variant("toy"))
    assert (toy["layers"], toy["width"], toy["heads"]) == (12, 64, 4)
    headless = anatomy.architecture_row(get_variant("vit_orig_b32_in21k"))
    with_head = anatomy.architecture_row("vit_base_patch32_224")
    assert with_head["parameters"] - headless["parameters"] == 768 * 1000 + 1000


def test_low_frequency_share_keeps_a_low_wave_and_drops_a_checkerboard():
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    low = torch.cos(2 * math.pi * cols / 8).expand(3, 8, 8)  # one cycle: 1/4 of Nyquist
    checker = ((rows + cols) % 2 * 2 - 1).expand(3, 8, 8)
    shares = anatomy.low_frequency_share(torch.stack([low, checker]))
    assert shares[0].item() == pytest.approx(1.0) and shares[1].item() == pytest.approx(0.0)


def test_similarity_by_distance_and_the_bridge_frame():
    import pandas as pd

    grid = (2, 2)
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    frame = anatomy.similarity_by_distance(anatomy.position_similarity(rows, grid))
    # distance 1: pairs (0,1), (0,2), (1,3), (2,3), both ways; distance 1.41 rounds to 1 too
    assert frame.distance.tolist() == [1] and frame.pairs.tolist() == [12]
    cos = 1 / math.sqrt(2)
    assert frame.similarity.iloc[0] == pytest.approx((8 * cos + 2 * 1.0 + 2 * 0.0) / 12)
    distances = pd.DataFrame({"block": [1, 1, 2, 2, 3, 3], "head": [0, 1] * 3,
                              "distance": [1.0, 3.0, 4.0, 6.0, 2.0, 2.0]})
    evolution = pd.DataFrame({"block": [1, 2, 3] * 2, "token": ["[CLS]"] * 3 + ["image"] * 3,
                              "identifiability": [0.1, 0.5, 0.6, 0.2, 0.3, 0.9]})
    joined = anatomy.distance_and_gain(distances, evolution)
    assert joined.distance.tolist() == [2.0, 5.0, 2.0]
    assert joined["gain [CLS]"].iloc[1:].round(6).tolist() == [0.4, 0.1]
    assert joined["gain image"].isna().tolist() == [True, False, False]
    assert list(anatomy.distance_and_gain(distances, None).columns) == ["block", "distance"]
    # each gain's interval pairs the two blocks over the same images, computed here apart
    from vitcls_utils.base.uncertainty import paired_difference

    images = [np.r_[0.1, 0.2, 0.0, 0.1, 0.1], np.r_[0.4, 0.6, 0.5, 0.5, 0.5],
              np.r_[0.5, 0.7, 0.6, 0.5, 0.7], np.r_[0.2, 0.1, 0.3, 0.2, 0.2],
              np.r_[0.3, 0.25, 0.4, 0.25, 0.3], np.r_[0.9, 0.8, 1.0, 0.9, 0.9]]
    joined = anatomy.distance_and_gain(distances, evolution.assign(identifiability_images=images))
    assert joined["gain image, 95% CI"].tolist() == [
        "–", paired_difference(images[4], images[3]).bounds(3),
        paired_difference(images[5], images[4]).bounds(3)]
    assert joined["gain image"].iloc[2] == pytest.approx(paired_difference(images[5],
                                                                           images[4]).estimate)
    from scipy.stats import spearmanr

    x, y = [3.0, 1.0, 4.0, 1.5, 5.0], [2.0, 7.0, 1.0, 8.0, 2.5]
    assert anatomy.rank_correlation(x, y) == pytest.approx(spearmanr(x, y).statistic)


@pytest.mark.parametrize("img_size, class_token", [(48, True), (80, True), (64, False)])
def test_position_embeddings_of_any_grid_leave_the_prefix_out(img_size, class_token):
    """A checkpoint fine-tuned at another resolution has another grid (384 px: 24 x 24)."""
    import timm

    kwargs = dict(img_size=img_size, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    if not class_token:
        kwargs.update(class_token=False, global_pool="avg")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    side = img_size // 16
    table = anatomy.patch_position_embeddings(model)
    assert table.shape == (side * side, 32)
    torch.testing.assert_close(table, model.pos_embed[0, -side * side:].detach())
    similarity = anatomy.position_similarity(table, (side, side))
    diagonal = similarity.reshape(side * side, side * side).diagonal()
    torch.testing.assert_close(diagonal, torch.ones_like(diagonal))
