"""ConViT (chapter 7): hooks on GPSA and MHSA blocks, the [CLS] that joins mid-network in stores,
projector and readouts, the gates, locality, masks and attention maps, each against a second
computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from vitcls_utils.model import registry
from vitcls_utils.analysis import anatomy, convit
from vitcls_utils.analysis.block_readout import readout_for
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.model.hooks import run_with_cache, site_names
from vitcls_utils.analysis.identifiability import evolution
from vitcls_utils.model.loading import load_variant
from vitcls_utils.model.layout import TokenLayout
from vitcls_utils.model.projection import ClassProjector
from vitcls_utils.datasets.toy import TOY_PREPROCESS
from vitcls_utils.model.registry import Variant

#: 4 heads of width 8, four blocks: GPSA in blocks 0-1, [CLS] joins before block 2
TINY_CONVIT = dict(img_size=32, patch_size=8, embed_dim=8, depth=4, num_heads=4,
                   num_classes=10, local_up_to_layer=2)


def tiny_convit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("convit_tiny", pretrained=False, **TINY_CONVIT)
    with torch.no_grad():  # signal in every bias and the head, and gates away from their init
        for name, p in model.named_parameters():
            if name.endswith("bias") or "head" in name:
                p.normal_(0, 0.2)
            if name.endswith("gating_param"):
                p.normal_(0, 1.5)
    return model.eval().requires_grad_(False)


def images(n: int = 3, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def model():
    return tiny_convit()


@pytest.fixture
def toy_convit_variant():
    """A registry entry for a 3-block random ConViT on the toy images ([CLS] from block 2)."""
    variant = Variant(
        key="test_tiny_convit", label="tiny toy ConViT", arch="convit_tiny", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=24, pooling="token", n_tokens=50,
        dataset="toy", paper_key="-", weights="random", random=True, family="convit",
        model_kwargs=(("img_size", 56), ("patch_size", 8), ("embed_dim", 8), ("depth", 3),
                      ("num_heads", 4), ("local_up_to_layer", 1)),
    )
    registry.register(variant)
    yield variant
    registry.VARIANTS.pop(variant.key, None)


def test_layout_marks_where_the_cls_joins(model):
    layout = TokenLayout.of(model)
    assert (layout.num_prefix, layout.grid, layout.has_cls, layout.prefix_from) == (1, (4, 4),
                                                                                    True, 2)
    assert [layout.has_prefix_at(b) for b in range(4)] == [False, False, True, True]


def test_sites_decompose_and_reading_them_changes_nothing(model, weights_unchanged):
    check = weights_unchanged(model)
    x = images()
    plain = model(x)
    logits, cache = run_with_cache(model, x)
    assert torch.equal(plain, logits)
    assert set(cache) == set(site_names(model))
    assert cache["hook_embed"].shape[1] == 16
    for i in range(4):
        b = f"blocks.{i}."
        assert cache[b + "hook_resid_pre"].shape[1] == (16 if i < 2 else 17)
        mid = cache[b + "hook_resid_pre"] + cache[b + "hook_attn_out"]
        torch.testing.assert_close(cache[b + "hook_resid_mid"], mid, rtol=0, atol=1e-6)
        post = mid + cache[b + "hook_mlp_out"]
        torch.testing.assert_close(cache[b + "hook_resid_post"], post, rtol=0, atol=1e-6)
        assert cache[b + "attn.hook_z"].shape[2:] == (4, 8)
    check()


def test_gpsa_pattern_at_the_hook_is_get_attention_and_mhsa_is_recomputed(model):
    _, cache = run_with_cache(model, images())
    for i, block in enumerate(model.blocks):
        h = block.norm1(cache[f"blocks.{i}.hook_resid_pre"])
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]
        if i < 2:
            assert torch.equal(pattern, block.attn.get_attention(h))
        else:  # plain MHSA: softmax(q k^T scale) from the qkv weights
            B, N, C = h.shape
            q, k, _ = block.attn.qkv(h).reshape(B, N, 3, 4, C // 4).permute(2, 0, 3, 1, 4)
            torch.testing.assert_close(pattern, (q @ k.transpose(-1, -2) / math.sqrt(C // 4))
                                       .softmax(-1), rtol=1e-5, atol=1e-6)


def test_forced_gates_give_positional_or_content_attention_exactly(model):
    x = images()
    for kind, k in (("content", 2), ("position", 1)):
        with convit.masked(model, convit.Mask(kind, k)):
            _, cache = run_with_cache(model, x, [f"blocks.{b}.{s}" for b in range(2)
                                                 for s in ("hook_resid_pre", "attn.hook_pattern")])
        for b in range(k):
            attn = model.blocks[b].attn
            pattern = cache[f"blocks.{b}.attn.hook_pattern"]
            if kind == "content":  # sigma = 1: positional attention only
                expected = convit.positional_attention(attn, 16).expand_as(pattern)
            else:
                expected = convit.content_attention(
                    attn, model.blocks[b].norm1(cache[f"blocks.{b}.hook_resid_pre"]))
            torch.testing.assert_close(pattern, expected, rtol=1e-6, atol=1e-7)
    assert torch.sigmoid(torch.tensor(convit.GATE_FORCE)) == 1.0
    assert torch.sigmoid(torch.tensor(-convit.GATE_FORCE)) == 0.0


def test_masks_restore_the_parameter_objects_and_their_bits(model, weights_unchanged):
    check = weights_unchanged(model)
    before = {name: p for name, p in model.named_parameters()}
    x = images()
    plain = model(x)
    for mask in convit.table_masks(model, ks=(1, 2, 3)):
        with convit.masked(model, mask):
            out = model(x)
        assert torch.equal(out, plain) == (mask.kind == "none"), mask.name
    assert {name: p for name, p in model.named_parameters()} == before
    assert all(before[n] is p for n, p in model.named_parameters())
    check()
    with pytest.raises(RuntimeError, match="boom"), convit.masked(model, convit.Mask("content", 1)):
        raise RuntimeError("boom")
    assert model.blocks[0].attn.gating_param is before["blocks.0.attn.gating_param"]
    check()
    with pytest.raises(VitclsError, match="2 GPSA blocks"):
        convit.Mask("position", 3).values(model)
    with pytest.raises(VitclsError, match="blocks >= 1"):
        convit.Mask("content")


def test_gates_and_locality_read_the_parameters_and_complete_the_square(model):
    gates = convit.gates(model)
    assert list(gates.layer.unique()) == [1, 2] and len(gates) == 8
    expected = torch.sigmoid(torch.cat([model.blocks[b].attn.gating_param for b in (0, 1)]))
    np.testing.assert_allclose(gates.gate, expected.numpy(), rtol=1e-6)
    local = convit.locality(model)
    np.testing.assert_allclose(local.strength, 1.0)  # the local init: alpha = 1 ...
    assert set(np.round(local.centre_x, 6)) == {-0.5, 0.5}  # ... centres on a 2x2 kernel
    # the positional softmax is a Gaussian of strength alpha around the centre
    attn = model.blocks[0].attn
    rel = attn.get_rel_indices(16)[0]
    for row in local[local.layer == 1].itertuples():
        dx, dy = rel[..., 0] - row.centre_x, rel[..., 1] - row.centre_y
        gaussian = (-row.strength * (dx ** 2 + dy ** 2)).softmax(-1)
        torch.testing.assert_close(convit.positional_attention(attn, 16)[row.head - 1],
                                   gaussian.float(), rtol=1e-5, atol=1e-6)
    assert convit.heads_without_centre(local).empty
    with torch.no_grad():  # layer 2, head 3: a bowl (alpha < 0); layer 1, head 2: a plane
        model.blocks[1].attn.pos_proj.weight[2, 2] = 0.3
        model.blocks[0].attn.pos_proj.weight[1, 2] = 0.0
    local = convit.locality(model)
    missing = convit.heads_without_centre(local)
    assert list(zip(missing.layer, missing["head"])) == [(1, 2), (2, 3)]
    np.testing.assert_allclose(missing.strength, [0.0, -0.3], atol=1e-7)
    nan = local.centre_x.isna() & local.centre_y.isna()
    assert list(zip(local.layer[nan], local["head"][nan])) == [(1, 2), (2, 3)]
    gate = torch.sigmoid(model.blocks[1].attn.gating_param[2]).item()
    assert missing.gate.iloc[1] == pytest.approx(gate)
    with pytest.raises(VitclsError, match="no GPSA block"):
        convit.gates(timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8,
                                       embed_dim=32, depth=1, num_heads=2))


@pytest.mark.parametrize("grid", [(1, 5), (2, 2), (3, 3)])
def test_nonlocality_of_uniform_attention_is_its_closed_form(grid):
    n = grid[0] * grid[1]
    closed = {(1, 5): (25 - 1) / (3 * 5), (2, 2): (2 + math.sqrt(2)) / 4,
              # 3x3, by offsets: 12 + 12 at distance 1, 12 + 12 at 2, 16 at sqrt 2, 16 at
              # sqrt 5, 4 at sqrt 8, over the 81 ordered pairs
              (3, 3): (48 + 24 * math.sqrt(2) + 16 * math.sqrt(5)) / 81}[grid]
    uniform = torch.full((1, n, n), 1 / n, dtype=torch.float64)
    assert float(anatomy.mean_attention_distance(uniform, grid, num_prefix=0)) == \
        pytest.approx(closed, rel=1e-12)
    with_cls = torch.full((1, n + 1, n + 1), 1 / (n + 1), dtype=torch.float64)  # [CLS]: distance 0 unless renormalised
    assert float(anatomy.mean_attention_distance(with_cls, grid, 1)) == \
        pytest.approx(closed * n / (n + 1), rel=1e-12)
    assert float(anatomy.mean_attention_distance(with_cls, grid, 1, prefix="renormalize")) == \
        pytest.approx(closed, rel=1e-12)


def test_attention_maps_take_the_query_row_without_cls(model):
    x = images(1)
    _, cache = run_with_cache(model, x)
    maps = convit.query_attention_maps(model, x, [0, 3])
    assert maps[0].shape == (4, 4, 4)
    centre = 2 * 4 + 2
    assert torch.equal(maps[0].flatten(1), cache["blocks.0.attn.hook_pattern"][0, :, centre])
    assert torch.equal(maps[3].flatten(1), cache["blocks.3.attn.hook_pattern"][0, :, 1 + centre, 1:])
    square = torch.zeros(2, 4, 4)
    square[0, 1:4, 1:4], square[1, 0, 0] = 1 / 9, 1.0  # all within one patch / a far corner
    torch.testing.assert_close(convit.local_mass(square, (2, 2)), torch.tensor([1.0, 0.0]))
    assert float(convit.local_mass(square, (0, 0))[1]) == 1.0  # cut at the edge
    with pytest.raises(VitclsError, match="not in the 4x4 grid"):
        convit.query_attention_maps(model, x, [0], query=16)


def test_store_marks_cls_absent_before_it_joins_and_projects_the_rest(toy_convit_variant,
                                                                      tmp_path):
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.model.perturbations import TokenRemoval

    model = load_variant("test_tiny_convit")
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    store = open_store(extract(model, data, tmp_path, batch_size=7, progress=False))
    assert store.rank.shape == (24, 9, 50) and store.prefix_from == 1
    rank = store.by_block("rank", "resid_post")
    assert (rank[:, 0, 0] == -1).all() and (rank[:, 1:, 0] >= 0).all()
    assert np.isnan(store.by_block("true_logit", "resid_post")[:, 0, 0]).all()
    assert np.isnan(store.identifiability()[:, 0, 0]).all()
    assert not np.isnan(store.identifiability()[:, :, 1:]).any()
    curves = evolution(store)
    assert list(curves[curves.token == "[CLS]"].block) == [2, 3]
    # the image columns line up by patch across the join, and the final [CLS] is the logits
    x = torch.stack([TOY_PREPROCESS(data.load(i)[0]) for i in range(24)])
    logits, cache = run_with_cache(model, x, ["blocks.0.hook_resid_post",
                                              "blocks.2.hook_resid_post"])
    projector = ClassProjector(model)
    labels = torch.tensor(np.array(store.labels), dtype=torch.long)
    before = projector(cache["blocks.0.hook_resid_post"])  # [I, 49, C]: patches only
    torch.testing.assert_close(torch.tensor(store.by_block("true_logit", "resid_post")[:, 0, 1:]),
                               before.gather(-1, labels[:, None, None].expand(-1, 49, 1))[..., 0],
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(projector(cache["blocks.2.hook_resid_post"][:, 0]), logits,
                               rtol=1e-5, atol=1e-5)
    assert (store.by_block("top1", "resid_post")[:, -1, 0] == logits.argmax(-1).numpy()).all()
    assert (store.pred == logits.argmax(-1).numpy()).all()
    from vitcls_utils.analysis.identifiability import block_boxes
    from vitcls_utils.model.perturbations import AttentionPerturbation

    boxes = block_boxes(store)
    assert list(boxes[boxes.token == "[CLS]"].block) == [2, 3]
    for perturbation in (TokenRemoval("class"), AttentionPerturbation("no_cls")):
        with pytest.raises(VitclsError, match="joins at block 2"):
            extract(model, data, tmp_path, perturbation=perturbation, progress=False)


def test_top_keys_of_a_convit_line_up_by_token(toy_convit_variant, tmp_path):
    """Chapter 3's key indices: the [CLS] row absent before it joins, the patches' rows the
    top coefficients of the same patch."""
    from vitcls_utils.datasets.kinds import build_dataset

    model = load_variant("test_tiny_convit")
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    store = open_store(extract(model, data, tmp_path, batch_size=24, progress=False,
                               kinds=("resid_post",), key_topk=3))
    assert store.key_mlp.shape == (24, 3, 50, 3)
    assert (store.key_mlp[:, 0, 0] == -1).all() and (store.key_mlp[:, 1:, 0] >= 0).all()
    x = torch.stack([TOY_PREPROCESS(data.load(i)[0]) for i in range(24)])
    _, cache = run_with_cache(model, x, ["blocks.0.mlp.hook_pre"])
    top = cache["blocks.0.mlp.hook_pre"].topk(3, dim=-1).indices
    assert (torch.from_numpy(np.array(store.key_mlp[:, 0, 1:])).long() == top).all()


def test_evaluate_under_masks_and_the_readout_without_cls(toy_convit_variant):
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.stores.stimulus_loader import labelled_batches

    model = load_variant("test_tiny_convit")
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    masks = convit.table_masks(model, ks=(1,))
    assert [m.name for m in masks] == ["unmasked", "position embedding zeroed",
                                       "content masked, first 1", "position masked, first 1"]
    accuracy, blocks = convit.evaluate_masks(model, data, masks, batch_size=10, by_block=True,
                                       progress=False)
    correct = sum(int((model(x).argmax(-1) == y).sum())
                  for x, y in labelled_batches(model, data, 10, "", False))
    assert accuracy.set_index("mask").top1["unmasked"] == pytest.approx(100 * correct / 24)
    hits = np.concatenate([(model(x).argmax(-1) == y).numpy()
                           for x, y in labelled_batches(model, data, 10, "", False)])
    assert np.array_equal(accuracy.set_index("mask").top1_images["unmasked"], 100.0 * hits)
    plain = blocks[blocks["mask"] == "unmasked"].set_index("block")
    assert np.isnan(plain.cls_identifiability[1]) and not np.isnan(plain.cls_identifiability[2])
    assert set(blocks["mask"]) == {m.name for m in masks}
    readout = readout_for(model)
    assert readout.n_patches == 49


def nonlocality_as_convit_main_py(model, x):
    """ConViT's ``main.py`` written out: every layer's attention on the patch embedding alone
    (no position embedding, norm or [CLS]), averaged over the batch, then their
    ``get_attention_map``: sum_nm sqrt(δx² + δy²) A_hnm / N. [layers, heads], float64."""
    tokens = model.patch_embed(x)
    batch, n, dim = tokens.shape
    side = int(round(n ** 0.5))
    ind = torch.arange(side).view(1, -1) - torch.arange(side).view(-1, 1)
    indx = ind.repeat(side, side)
    indy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
    indd = indx ** 2 + indy ** 2
    rel = torch.stack([indx, indy, indd], -1).float()  # [N, N, 3]
    out = []
    for block in model.blocks:
        attn = block.attn
        heads = attn.num_heads
        if hasattr(attn, "gating_param"):  # GPSA: content and position mixed by the gate
            qk = attn.qk(tokens).reshape(batch, n, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
            content = (qk[0] @ qk[1].transpose(-2, -1) * attn.scale).softmax(-1)
            position = (rel @ attn.pos_proj.weight.T + attn.pos_proj.bias).permute(2, 0, 1)
            gate = torch.sigmoid(attn.gating_param).view(1, -1, 1, 1)
            mixed = (1 - gate) * content + gate * position.softmax(-1)
            pattern = mixed / mixed.sum(-1, keepdim=True)
        else:  # MHSA
            qkv = attn.qkv(tokens).reshape(batch, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            pattern = (qkv[0] @ qkv[1].transpose(-2, -1) * attn.scale).softmax(-1)
        out.append(torch.einsum("nm,hnm->h", indd.double() ** 0.5,
                                pattern.mean(0).double()) / n)
    return torch.stack(out)


def test_authors_nonlocality_feeds_every_layer_the_patch_embedding_alone(toy_convit_variant):
    from vitcls_utils.datasets.kinds import build_dataset

    model = load_variant("test_tiny_convit")
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    preprocess = model.vitcls_info.variant.preprocess
    x = torch.stack([preprocess(data.load(i)[0]) for i in range(6)])
    with torch.no_grad():
        expected = nonlocality_as_convit_main_py(model, x)  # [3 layers, 4 heads]
    authors = anatomy.attention_distances(model, data, n_images=6, pixels=False, batch_size=4,
                                          progress=False, inputs="authors")
    got = torch.tensor(authors.distance.values).reshape(3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert authors["head"].tolist() == [1, 2, 3, 4] * 3  # heads 1-based, as gates and locality
    real = anatomy.attention_distances(model, data, n_images=6, pixels=False, batch_size=4,
                                       progress=False)
    assert not np.allclose(real.distance, authors.distance)  # a different input, other numbers
    with pytest.raises(ValueError, match="inputs must be one of"):
        anatomy.attention_distances(model, data, n_images=1, inputs="patch_embed")
