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
    with pytest.raises(VitclsError, match="SwinTransformerBlock"):
        get_variant("timm:swin_tiny_patch4_window7_224:random")
    with pytest.raises(VitclsError, match="ParallelThingsBlock"):
        block_family(timm.create_model("vit_small_patch16_18x2_224", pretrained=False,
                                       depth=1, embed_dim=32, num_heads=2, img_size=32,
                                       patch_size=8).blocks[0])
    assert time.perf_counter() - start < 1.0


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
        assert store.num_prefix == (5 if "reg4" in key else 1)
        rank = store.by_block("rank", "resid_post")
        assert rank.shape[1] == 2 and 0 <= store.accuracy <= 1
    finally:
        registry.VARIANTS.pop(small.key, None)
