"""The anatomy adapters on tiny random-init instances of every family: the residual identity,
the readout of the pooled representation, hooks that change nothing, attention rows that sum
to 1, and refusals with their reason.

The models are timm's smallest configs of each family cut down with timm's own kwargs (2
blocks, width 32, 2 heads, a 4x4 patch grid), so that the whole file runs in seconds.
"""
from __future__ import annotations

import time

import pytest

import vitcls_utils.model.loading  # noqa: F401  (torchvision shim before timm)
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.families import block_family, model_family, require, variant_family
from vitcls_utils.model.stages import block_names, class_space_blocks, token_boxes
from vitcls_utils.model.hooks import hooks, run_with_cache
from vitcls_utils.model.layout import TokenLayout, disable_fused_attn
from vitcls_utils.model.perturbations import keeping_tokens
from vitcls_utils.model.projection import ClassProjector
from vitcls_utils.model.registry import get_variant

import timm  # noqa: E402
import torch  # noqa: E402

SMALL = dict(embed_dim=32, num_heads=2, depth=2, num_classes=10)
#: family case -> (timm name, kwargs, expected family)
CASES = {
    "deit3": ("deit3_small_patch16_224", dict(img_size=32, patch_size=8), "vit"),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=7), "vit"),
    "flexivit": ("flexivit_small", dict(img_size=32, patch_size=8), "vit"),
    "siglip": ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8), "vit"),
    "beit": ("beit_base_patch16_224", dict(img_size=32, patch_size=8), "beit"),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=7), "eva"),
}


def build(case: str, drop_path: float = 0.0, **extra) -> torch.nn.Module:
    name, kwargs, _ = CASES[case]
    timm.layers.set_fused_attn(False)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, drop_path_rate=drop_path,
                              **{**SMALL, **kwargs, **extra})
    with torch.no_grad():  # layer scale and heads away from their init, so that they count
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "head" in pname or "gamma" in pname:
                p.normal_(0, 0.3)
    return disable_fused_attn(model).eval().requires_grad_(False)


def images(model: torch.nn.Module, n: int = 2) -> torch.Tensor:
    side = int(model.patch_embed.img_size[0])
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    model = build(request.param)
    x = images(model)
    with torch.no_grad():
        plain = model(x)
        hooked, cache = run_with_cache(model, x)
    return request.param, model, x, plain, hooked, cache


def test_family_is_read_off_the_blocks(case):
    name, model, *_ = case
    assert model_family(model).name == CASES[name][2]


def test_hooked_logits_equal_unhooked_bit_for_bit(case):
    _, _, _, plain, hooked, _ = case
    assert torch.equal(plain, hooked)


def test_residual_out_is_in_plus_attention_plus_mlp(case):
    _, model, _, _, _, cache = case
    for i in range(len(model.blocks)):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{i}.hook_attn_out"], cache[f"blocks.{i}.hook_mlp_out"]
        mid = cache[f"blocks.{i}.hook_resid_mid"]
        assert (pre + attn - mid).abs().max() <= 1e-5
        assert (pre + attn + mlp - post).abs().max() <= 1e-5
        assert attn.abs().max() > 1e-3 and mlp.abs().max() > 1e-3  # the branches are not empty


def test_layer_scale_is_inside_the_hooked_branch():
    """Second computation for BEiT and EVA: gamma * branch recomputed from the block's own
    modules equals the hooked contribution (the hook sits after layer scale; EVA-02 has none
    by default, so it is switched on here)."""
    for case in ("beit", "eva02"):
        model = build(case, init_values=0.5)
        assert block_family(model.blocks[0]).name in ("beit", "eva")
        block = model.blocks[0]
        _, cache = run_with_cache(model, images(model), ["blocks.0.hook_resid_pre",
                                                         "blocks.0.hook_attn_out"])
        x = cache["blocks.0.hook_resid_pre"]
        kwargs = {}
        if case == "eva02":
            kwargs["rope"] = model.rope.get_embed() if model.rope is not None else None
        else:
            kwargs["shared_rel_pos_bias"] = None
        by_hand = block.gamma_1 * block.attn(block.norm1(x), **kwargs)
        assert (by_hand - cache["blocks.0.hook_attn_out"]).abs().max() <= 1e-5


def test_drop_path_is_inside_the_hooked_branch():
    """In training mode, the dropped branch is what the hooks see: the identity still holds."""
    model = build("beit", drop_path=0.5).train()
    torch.manual_seed(3)
    _, cache = run_with_cache(model, images(model, 4))
    pre, post = cache["blocks.1.hook_resid_pre"], cache["blocks.1.hook_resid_post"]
    attn, mlp = cache["blocks.1.hook_attn_out"], cache["blocks.1.hook_mlp_out"]
    assert (pre + attn + mlp - post).abs().max() <= 1e-5


def test_readout_of_the_pooled_representation_equals_the_logits(case):
    _, model, _, plain, _, cache = case
    layout = TokenLayout.of(model)
    projector = ClassProjector(model)
    last = cache[f"blocks.{len(model.blocks) - 1}.hook_resid_post"]
    pooled = projector.pool(last, layout.num_prefix, model.global_pool)
    assert (projector.classify(pooled) - plain).abs().max() <= 1e-5


def test_attention_rows_sum_to_one(case):
    _, model, _, _, _, cache = case
    for i in range(len(model.blocks)):
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]
        assert pattern.shape[-1] == pattern.shape[-2] == TokenLayout.of(model).n_tokens
        assert (pattern.sum(-1) - 1).abs().max() <= 1e-5


def test_siglip_token_readout_is_the_pool_of_that_token_alone():
    """The choice for attention-pooled models, checked against the model's own head run on a
    one-token sequence."""
    model = build("siglip")
    projector = ClassProjector(model)
    _, cache = run_with_cache(model, images(model), ["blocks.1.hook_resid_post"])
    tokens = cache["blocks.1.hook_resid_post"]
    per_token = projector(tokens)
    for j in (0, 5):
        alone = model.forward_head(model.norm(tokens[:, j:j + 1]))
        assert (per_token[:, j] - alone).abs().max() <= 1e-5


def test_replacing_a_branch_changes_the_output_in_every_family():
    for case in ("beit", "eva02"):
        model = build(case)
        x = images(model)
        plain = model(x)
        with hooks(model, [("blocks.0.hook_mlp_out", lambda v, n: torch.zeros_like(v))]):
            zeroed = model(x)
        assert not torch.allclose(plain, zeroed)
        assert torch.equal(model(x), plain)  # hooks removed


def test_token_removal_is_refused_where_positions_need_the_full_grid():
    for case, word in (("beit", "relative position bias"), ("eva02", "rotary")):
        model = build(case)
        with pytest.raises(VitclsError, match=word):
            with keeping_tokens(model, torch.tensor([[0, 1, 2]])):
                pass
    require(build("deit3"), "token_removal", "token removal")  # allowed: no error


def test_an_unknown_block_fails_fast_naming_its_type():
    start = time.perf_counter()
    with pytest.raises(VitclsError, match="Bottleneck"):
        get_variant("timm:resnet50:random")
    with pytest.raises(VitclsError, match="ParallelThingsBlock"):
        block_family(timm.create_model("vit_small_patch16_18x2_224", pretrained=False,
                                       depth=1, embed_dim=32, num_heads=2, img_size=32,
                                       patch_size=8).blocks[0])
    assert time.perf_counter() - start < 1.0


#: Swin cut down: 64-px input, 4-px patches, 4x4 windows, two stages of two blocks (16x16 then
#: 8x8 tokens), so that the second block of each stage runs shifted windows with their mask
SWIN = ("swin_tiny_patch4_window7_224", dict(img_size=64, patch_size=4, window_size=4,
                                             embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                             num_classes=10))


@pytest.fixture(scope="module")
def swin():
    timm.layers.set_fused_attn(False)
    torch.manual_seed(0)
    model = timm.create_model(SWIN[0], pretrained=False, **SWIN[1])
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "head" in pname:
                p.normal_(0, 0.3)
    model = disable_fused_attn(model).eval().requires_grad_(False)
    x = images(model)
    with torch.no_grad():
        plain = model(x)
        hooked, cache = run_with_cache(model, x)
    return model, x, plain, hooked, cache


def test_swin_identities(swin):
    model, _, plain, hooked, cache = swin
    assert model_family(model).name == "swin" and torch.equal(plain, hooked)
    for i, tokens in enumerate((256, 256, 64, 64)):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{i}.hook_attn_out"], cache[f"blocks.{i}.hook_mlp_out"]
        assert pre.shape[1] == tokens == token_boxes(model, i).shape[0]
        assert (pre + attn - cache[f"blocks.{i}.hook_resid_mid"]).abs().max() <= 1e-5
        assert (pre + attn + mlp - post).abs().max() <= 1e-5
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]  # [B * windows, H, 16, 16]
        assert pattern.shape[-1] == 16 and (pattern.sum(-1) - 1).abs().max() <= 1e-5
    # the shifted blocks mask keys across window seams: some weights are ~0 (exp(-100))
    assert (cache["blocks.1.attn.hook_pattern"] < 1e-30).any()
    assert not (cache["blocks.0.attn.hook_pattern"] < 1e-30).any()


def test_swin_readout_of_the_last_stage(swin):
    """The pooled readout equals the logits; a last-stage token is read through the final
    norm and the head's linear map; an earlier stage's width is refused."""
    model, _, plain, _, cache = swin
    projector = ClassProjector(model)
    last = cache["blocks.3.hook_resid_post"]
    assert (projector.classify(projector.pool(last, 0, "avg")) - plain).abs().max() <= 1e-5
    by_hand = model.head.fc(model.norm(last[:, 5]))
    assert (projector(last)[:, 5] - by_hand).abs().max() <= 1e-5
    with pytest.raises(VitclsError, match="last stage"):
        projector(cache["blocks.0.hook_resid_post"])


def test_swin_tokens_map_to_image_regions(swin):
    """Every stage's boxes tile the 64-px image exactly once, and a merged token of stage 2
    covers the 2x2 stage-1 tokens it was merged from."""
    model = swin[0]
    for block, step in ((0, 4), (2, 8)):
        boxes = token_boxes(model, block)
        cover = torch.zeros(64, 64)
        for top, left, bottom, right in boxes.tolist():
            assert (bottom - top, right - left) == (step, step)
            cover[top:bottom, left:right] += 1
        assert torch.equal(cover, torch.ones(64, 64))
    merged, fine = token_boxes(model, 2)[9], token_boxes(model, 0)
    inside = (fine[:, 0] >= merged[0]) & (fine[:, 2] <= merged[2]) & \
        (fine[:, 1] >= merged[1]) & (fine[:, 3] <= merged[3])
    assert int(inside.sum()) == 4


def test_swin_refuses_what_it_cannot_support(swin):
    from vitcls_utils.model.perturbations import AttentionPerturbation

    model = swin[0]
    with pytest.raises(VitclsError, match="window"):
        AttentionPerturbation("self_only").fwd_hooks(model)
    with pytest.raises(VitclsError, match="window"):
        with keeping_tokens(model, torch.tensor([[0, 1]])):
            pass
    with pytest.raises(VitclsError, match="stage"):
        require(model, "every_block", "key-value memories")
    with pytest.raises(VitclsError, match="window"):
        require(model, "image_attention", "explanation maps")
    from vitcls_utils.analysis.anatomy import attention_distances

    with pytest.raises(VitclsError, match="an attention distance is not defined for swin"):
        attention_distances(model, None)
    from vitcls_utils.analysis.memories import Memories

    with pytest.raises(VitclsError, match="only the last stage has the head's width"):
        Memories.of(model)
    spec = get_variant("timm:swin_tiny_patch4_window7_224:random")
    assert variant_family(spec).name == "swin"
    from vitcls_utils.running.notebook_rules import LAST_STAGE_NOTEBOOKS, applies, chapters

    planned = {n for c in chapters().values() for n in c if applies(n, spec, "imagenet-s")}
    assert planned == set(LAST_STAGE_NOTEBOOKS)


def test_swin_is_read_on_its_last_stage_under_its_own_block_numbers(swin):
    """The blocks of the head's width (the last stage), named by stage; a ViT's are all of
    them; the token layout is the last stage's grid, whose cells are its tokens' regions."""
    model = swin[0]
    assert class_space_blocks(model) == [2, 3]
    assert block_names(model) == ["stage 2, block 1", "stage 2, block 2"]
    layout = TokenLayout.of(model)
    assert (layout.num_prefix, layout.grid, layout.has_cls) == (0, (8, 8), False)
    assert token_boxes(model, 3).shape[0] == layout.n_patches
    deit = build("deit3")
    assert class_space_blocks(deit) == [0, 1] and block_names(deit) == ["block 1", "block 2"]


def test_variant_family_reads_the_model_not_the_name():
    assert variant_family(get_variant("timm:beitv2_base_patch16_224:random")).name == "beit"
    assert variant_family(get_variant("timm:eva02_tiny_patch14_336.mim_in22k_ft_in1k:random"
                                      )).name == "eva"


@pytest.mark.parametrize("key,kwargs", [
    ("timm:deit3_small_patch16_224:random:classes=24", dict(patch_size=8, img_size=56)),
    ("timm:beit_base_patch16_224:random:classes=24", dict(patch_size=8, img_size=56)),
    ("timm:eva02_tiny_patch14_336.mim_in22k_ft_in1k:random:classes=24",
     dict(patch_size=7, img_size=56)),
    ("timm:vit_small_patch14_reg4_dinov2:random:classes=24", dict(patch_size=7, img_size=56)),
    ("timm:vit_base_patch16_siglip_224:random:classes=24", dict(patch_size=8, img_size=56)),
    ("timm:flexivit_small:random:classes=24", dict(patch_size=8, img_size=56)),
])
def test_store_for_a_timm_key_on_the_toy_set(key, kwargs, tmp_path):
    """The whole store path per family, on a cut-down override of the timm key (2 blocks,
    width 32): the store's last-block readout of the pooled tokens is the model's accuracy,
    and the configuration records the full timm name.tag."""
    from vitcls_utils.model import registry
    from vitcls_utils.stores.extraction import store_for
    from dataclasses import replace

    small = replace(get_variant(key), key=key + ":small",
                    preprocess=replace(get_variant(key).preprocess, resize=56, crop=56),
                    model_kwargs=tuple({**dict(kwargs), "depth": 2, "embed_dim": 32,
                                        "num_heads": 2}.items()))
    registry.register(small)
    try:
        store = store_for(small.key, dataset="toy", n_per_class=1, results_dir=str(tmp_path),
                          progress=False, device="cpu")
        assert store.manifest["config"]["variant"] == small.key
        assert small.timm_name in store.manifest["config"]["weights_id"]
        assert store.num_prefix == (5 if "reg4" in key else 0 if "siglip" in key else 1)
        rank = store.by_block("rank", "resid_post")
        assert rank.shape[1] == 2 and 0 <= store.accuracy <= 1
    finally:
        registry.VARIANTS.pop(small.key, None)


def test_attention_pooled_models_are_kept_from_mean_token_readouts():
    """SigLIP's pool is not a mean: explanation maps and the patch readout's pooled column
    refuse it, and the runner plans neither for a 'map' variant."""
    from vitcls_utils.analysis.explanation_maps import class_space_maps
    from vitcls_utils.running.notebook_rules import NEEDS_MEAN_POOL, applies

    model = build("siglip")
    with pytest.raises(VitclsError, match="attention-pooled"):
        class_space_maps(model, images(model), torch.tensor([0, 1]))
    spec = get_variant("timm:vit_base_patch16_siglip_224:random:classes=24")
    assert spec.pooling == "map"
    assert not any(applies(name, spec, "toy") for name in NEEDS_MEAN_POOL)
    assert applies("tab1_identifiability_rate", spec, "toy")


def test_key_value_memories_are_refused_for_gated_mlps_and_pooled_heads():
    """EVA-02's SwiGLU has no one key per memory, SigLIP's pool sits before its head: chapter
    3's memory analyses refuse both, and the runner plans none of those notebooks for them."""
    from vitcls_utils.analysis.memories import Memories
    from vitcls_utils.running.notebook_rules import KEY_VALUE_MEMORIES, applies

    with pytest.raises(VitclsError, match="gated MLP"):
        Memories.of(build("eva02"))
    with pytest.raises(VitclsError, match="attention-pooled"):
        Memories.of(build("siglip"))
    assert Memories.of(build("beit")).n_blocks == 2  # plain MLP, class-token head: read
    eva = get_variant("timm:eva02_tiny_patch14_336.mim_in22k_ft_in1k:random:classes=24")
    beit = get_variant("timm:beit_base_patch16_224:random:classes=24")
    assert not any(applies(name, eva, "toy") for name in KEY_VALUE_MEMORIES)
    assert all(applies(name, beit, "toy") for name in KEY_VALUE_MEMORIES
               if name.startswith(("fig", "tab")))
    assert applies("fig3b_sublayer_change_rate", eva, "toy")


#: a Swin on the toy images at 32 px: an 8x8 grid of 4-px patches, then a 4x4 last stage
SWIN_TOY = dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
                num_heads=(1, 2))


def test_a_swin_store_holds_its_last_stage_under_its_own_numbers(tmp_path):
    """The store of a random-init Swin on the toy set holds blocks 3 and 4 ("stage 2, block
    1/2") on the last stage's 4x4 grid, with token labels on that grid; second computation:
    its ranks at the last block are those of head.fc(norm(token)) from the hooked stream, and
    its predictions the model's own."""
    import numpy as np

    from dataclasses import replace
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.model import registry
    from vitcls_utils.model.loading import load_variant
    from vitcls_utils.model.projection import rank_of_true_class
    from vitcls_utils.stores.extraction import store_for

    base = registry.variant_for_data("timm:swin_tiny_patch4_window7_224:random", "toy")
    small = replace(base, key=base.key + ":small", model_kwargs=tuple(SWIN_TOY.items()),
                    preprocess=replace(base.preprocess, resize=32, crop=32))
    registry.register(small)
    try:
        store = store_for(small.key, dataset="toy", n_per_class=1, results_dir=str(tmp_path),
                          progress=False, device="cpu")
        assert store.block_numbers == [3, 4] and store.n_blocks == 2
        assert store.block_names == ["stage 2, block 1", "stage 2, block 2"]
        assert store.manifest["layout"]["grid"] == [4, 4] and store.num_prefix == 0
        assert store.token_class.shape == (24, 16) and store.rank.shape[2] == 16
        model = load_variant(small.key, device="cpu")
        stimuli = build_dataset("toy", None, 24, n_per_class=1)
        x = torch.stack([small.preprocess(stimuli.load(i)[0]) for i in range(6)])
        _, cache = run_with_cache(model, x, ["blocks.3.hook_resid_post"])
        logits = model.head.fc(model.norm(cache["blocks.3.hook_resid_post"]))  # [6, 16, C]
        labels = torch.as_tensor(np.array(store.labels[:6]), dtype=torch.long)
        by_hand = rank_of_true_class(logits.flatten(0, 1), labels.repeat_interleave(16))
        site = store.sites.index("blocks.3.hook_resid_post")
        assert np.array_equal(store.rank[:6, site], by_hand.view(6, 16).numpy())
        assert np.array_equal(store.pred[:6], model(x).argmax(-1).numpy())
    finally:
        registry.VARIANTS.pop(small.key, None)
