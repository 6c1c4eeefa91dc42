"""Hooks: read-only hooks change nothing, the sites mean what their names say (checked against
a second, hand-written computation), interventions work and are always removed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from vitcls_utils import VitclsError
from vitcls_utils.model.hooks import (BLOCK_SITES, capture, forward_to, hooks, run_with_cache,
                                      site_names)
from vitcls_utils.model.layout import TokenLayout


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def count_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_reading_every_site_leaves_logits_bit_identical(any_tiny, weights_unchanged):
    check = weights_unchanged(any_tiny)
    x = images()
    plain = any_tiny(x)
    hooked, cache = run_with_cache(any_tiny, x)
    assert torch.equal(plain, hooked)
    assert set(cache) == set(site_names(any_tiny))
    assert count_hooks(any_tiny) == 0
    check()


def test_residual_decomposition(any_tiny):
    """resid_post = resid_pre + attn_out + mlp_out, also for post-norm blocks (GAP)."""
    _, cache = run_with_cache(any_tiny, images())
    assert torch.equal(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])
    for i in range(len(any_tiny.blocks)):
        b = f"blocks.{i}."
        mid = cache[b + "hook_resid_pre"] + cache[b + "hook_attn_out"]
        torch.testing.assert_close(cache[b + "hook_resid_mid"], mid, rtol=0, atol=1e-6)
        post = mid + cache[b + "hook_mlp_out"]
        torch.testing.assert_close(cache[b + "hook_resid_post"], post, rtol=0, atol=1e-6)
        if i + 1 < len(any_tiny.blocks):
            assert torch.equal(cache[b + "hook_resid_post"], cache[f"blocks.{i + 1}.hook_resid_pre"])


def test_attention_sites_match_a_hand_written_attention(any_tiny):
    """pattern and z recomputed from the block's weights; attn_out = (ls1|norm1)(proj(z))."""
    _, cache = run_with_cache(any_tiny, images())
    layout = TokenLayout.of(any_tiny)
    for i, block in enumerate(any_tiny.blocks):
        b = f"blocks.{i}."
        attn = block.attn
        post_norm = type(block).__name__ == "ResPostBlock"
        x = cache[b + "hook_resid_pre"]
        h = x if post_norm else block.norm1(x)
        B, N, _ = h.shape
        qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, attn.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        pattern = torch.softmax((q @ k.transpose(-1, -2)) / attn.head_dim ** 0.5, dim=-1)
        assert cache[b + "attn.hook_pattern"].shape == (B, attn.num_heads, N, N)
        assert N == layout.n_tokens
        torch.testing.assert_close(cache[b + "attn.hook_pattern"], pattern, rtol=1e-5, atol=1e-6)
        z = (pattern @ v).transpose(1, 2)  # [B, N, H, d_head]
        torch.testing.assert_close(cache[b + "attn.hook_z"], z, rtol=1e-5, atol=1e-6)
        out = attn.proj(z.flatten(-2))
        out = block.norm1(out) if post_norm else block.ls1(out)
        torch.testing.assert_close(cache[b + "hook_attn_out"], out, rtol=1e-5, atol=1e-6)


def test_mlp_sites(any_tiny):
    _, cache = run_with_cache(any_tiny, images())
    for i, block in enumerate(any_tiny.blocks):
        b = f"blocks.{i}."
        post_norm = type(block).__name__ == "ResPostBlock"
        mid = cache[b + "hook_resid_mid"]
        pre = block.mlp.fc1(mid if post_norm else block.norm2(mid))
        torch.testing.assert_close(cache[b + "mlp.hook_pre"], pre)
        torch.testing.assert_close(cache[b + "mlp.hook_post"], F.gelu(pre))
        out = block.mlp.fc2(cache[b + "mlp.hook_post"])
        out = block.norm2(out) if post_norm else block.ls2(out)
        torch.testing.assert_close(cache[b + "hook_mlp_out"], out)


def test_fused_and_explicit_attention_agree():
    explicit = tiny_model("cls")
    fused = tiny_model("cls")
    for module in fused.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    x = images(4)
    torch.testing.assert_close(fused(x), explicit(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(VitclsError, match="fused attention"):
        with capture(fused, "blocks.0.attn.hook_pattern"):
            pass


def test_replacing_a_site_changes_the_output_and_only_inside_the_block():
    model = tiny_model("cls")
    x = images()
    clean = model(x)

    def self_only(pattern, name):
        return torch.eye(pattern.shape[-1]).expand_as(pattern)

    with hooks(model, [(lambda n: n.endswith("attn.hook_pattern"), self_only)]):
        edited, cache = run_with_cache(model, x, names="blocks.1.attn.hook_pattern")
    assert not torch.allclose(edited, clean)
    assert torch.equal(cache["blocks.1.attn.hook_pattern"][0, 0], torch.eye(17))
    assert torch.equal(model(x), clean)
    assert count_hooks(model) == 0


def test_replacing_z_and_input_sites_keeps_their_shapes():
    model = tiny_model("cls")
    x = images()
    with hooks(model, [("blocks.0.attn.hook_z", lambda z, n: torch.zeros_like(z))]):
        _, cache = run_with_cache(model, x, names=["blocks.0.hook_attn_out"])
    expected = model.blocks[0].attn.proj.bias.expand_as(cache["blocks.0.hook_attn_out"])
    torch.testing.assert_close(cache["blocks.0.hook_attn_out"], expected)
    with hooks(model, [("blocks.2.hook_resid_pre", lambda v, n: v * 0)]):
        _, cache = run_with_cache(model, x, names="blocks.2.hook_resid_pre")
    assert torch.count_nonzero(cache["blocks.2.hook_resid_pre"]) == 0


def test_resid_mid_is_read_only():
    model = tiny_model("cls")
    with pytest.raises(VitclsError, match="hook_attn_out instead"):
        with hooks(model, [("blocks.1.hook_resid_mid", lambda v, n: v * 2)]):
            model(images())
    assert count_hooks(model) == 0


def test_token_removal_through_hook_embed():
    """Dropping tokens after the position embedding shortens every later site."""
    model = tiny_model("cls")
    keep = torch.tensor([0, 3, 5, 9])
    with hooks(model, [("hook_embed", lambda v, n: v[:, keep])]):
        logits, cache = run_with_cache(model, images(), names=lambda n: n.endswith("resid_post"))
    assert logits.shape == (2, 10)
    assert cache["blocks.2.hook_resid_post"].shape[1] == len(keep)


def test_hooks_are_removed_when_the_block_raises():
    model = tiny_model("gap_rpn")
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(model, [(lambda n: True, lambda v, n: None)]):
            assert count_hooks(model) > 0
            raise RuntimeError("boom")
    assert count_hooks(model) == 0


def test_site_names_order_and_errors():
    model = tiny_model("cls")
    names = site_names(model, ["resid_post", "attn_out"])
    assert names[:2] == ["blocks.0.hook_attn_out", "blocks.0.hook_resid_post"]
    assert len(names) == 2 * len(model.blocks)
    assert len(site_names(model)) == 1 + len(BLOCK_SITES) * len(model.blocks)
    for bad in ["blocks.9.hook_resid_post", "blocks.0.hook_nothing", "resid"]:
        with pytest.raises(VitclsError):
            with capture(model, bad):
                pass
    with pytest.raises(VitclsError, match="unknown site kind"):
        site_names(model, ["residual"])


def test_forward_to_stops_after_the_last_site_and_records_what_capture_records():
    model = tiny_model("cls")
    x = torch.randn(2, 3, 32, 32)
    sites = ["blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]
    with capture(model, sites) as cache:
        model(x)
    later = []
    with hooks(model, [("blocks.2.hook_resid_pre", lambda v, n: later.append(n))]):
        early = forward_to(model, x, sites)
    assert later == []  # block 2 never ran
    assert early.keys() == cache.keys()
    for name in sites:
        torch.testing.assert_close(early[name], cache[name], rtol=0, atol=0)
