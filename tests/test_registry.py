"""Registry: every variant builds from config with its declared layout; random controls are
seeded; checkpoints load strictly and safely; pretrained weights fail fast offline."""
from __future__ import annotations

import argparse
import time

import pytest
import torch
from safetensors.torch import save_file

from vitcls_utils import _compat
from vitcls_utils.model import registry
from vitcls_utils.base.errors import UnknownVariantError, WeightsError
from vitcls_utils.model.projection import ClassProjector
from vitcls_utils.model.registry import PAPER_KEYS, get_variant
from vitcls_utils.model.loading import build_model, load_variant, read_state_dict
from vitcls_utils.model.layout import TokenLayout

REQUIRED_KEYS = ["vit_b32", "vit_b16", "vit_l16", "vit_b16_miil", "vit_b16_cifar100",
                 "vit_b16_refinement", "vit_b16_gap"]


def test_registry_has_the_paper_keys_and_their_controls():
    assert list(PAPER_KEYS) == REQUIRED_KEYS
    for key in REQUIRED_KEYS:
        assert get_variant(key + "_random").base == key


@pytest.mark.slow
@pytest.mark.parametrize("key", REQUIRED_KEYS + [k + "_random" for k in REQUIRED_KEYS])
def test_every_variant_builds_without_weights(key):
    variant = get_variant(key)
    model = load_variant(key, pretrained=False)
    layout = TokenLayout.of(model)
    assert layout.n_tokens == variant.n_tokens
    assert layout.has_cls == variant.has_cls
    assert model.num_classes == variant.num_classes
    assert model.global_pool == variant.pooling
    assert not any(getattr(m, "fused_attn", False) for m in model.modules())
    assert not model.training
    assert model.vitcls_info.weights_id.startswith("random-init")
    out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, variant.num_classes)
    ClassProjector(model)  # every variant has a per-token readout


def test_gap_variant_is_residual_post_norm_with_fc_norm():
    model = build_model(get_variant("vit_b16_gap_random"))
    assert type(model.blocks[0]).__name__ == "ResPostBlock"
    assert isinstance(model.norm, torch.nn.Identity)
    assert isinstance(model.fc_norm, torch.nn.LayerNorm)
    assert model.blocks[0].attn.qkv.bias is None


def test_random_controls_are_seeded(tiny_variant):
    a = load_variant("test_tiny", seed=3).state_dict()
    b = load_variant("test_tiny", seed=3).state_dict()
    c = load_variant("test_tiny", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    state = torch.get_rng_state()
    load_variant("test_tiny", seed=5)
    assert torch.equal(state, torch.get_rng_state()), "loading must not disturb the global RNG"


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(UnknownVariantError, match="vit_b32") as info:
        get_variant("vit_b33")
    assert "unknown variant 'vit_b33'" in str(info.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tiny_variant, tmp_path, suffix):
    source = load_variant("test_tiny", seed=7)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:  # nested and prefixed, as training scripts save them
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_variant("test_tiny", weights=path, seed=0)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    assert loaded.vitcls_info.weights_id.startswith(f"file:w{suffix}:sha256=")


def test_checkpoint_with_wrong_keys_is_refused(tiny_variant, tmp_path):
    state = load_variant("test_tiny").state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["head.bias"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing: head.bias.*unexpected: extra.weight"):
        load_variant("test_tiny", weights=path)
    state = load_variant("test_tiny").state_dict()
    state["head.weight"] = torch.zeros(5, 32)
    torch.save(state, path)
    with pytest.raises(WeightsError, match="shape of head.weight"):
        load_variant("test_tiny", weights=path)


def test_unreadable_or_unsafe_checkpoints_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(junk)
    # an arbitrary pickled object is not loadable with weights_only=True
    torch.save({"w": torch.zeros(1), "obj": argparse.Namespace(a=1)}, tmp_path / "pickle.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        read_state_dict(tmp_path / "pickle.pth")


def test_refinement_drops_only_the_token_refinement_heads(tmp_path, monkeypatch):
    variant = registry.Variant(**{**get_variant("vit_b16_refinement").__dict__,
                                  "key": "test_refine", "arch": "vit_tiny_patch16_224",
                                  "model_kwargs": (("img_size", 32), ("patch_size", 8),
                                                   ("embed_dim", 32), ("depth", 2),
                                                   ("num_heads", 2))})
    monkeypatch.setitem(registry.VARIANTS, "test_refine", variant)
    state = dict(build_model(variant, seed=2).state_dict())
    state["transformerheads.0.conv.weight"] = torch.zeros(4)
    path = tmp_path / "deit_base_trm.pth"
    torch.save({"state_dict": state}, path)
    model = load_variant("test_refine", weights=path)
    assert torch.equal(model.head.weight, state["head.weight"])
    state["stray.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError, match="unexpected: stray.weight"):
        load_variant("test_refine", weights=path)


def test_pretrained_without_network_fails_fast_and_says_how(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty torch hub cache
    monkeypatch.setattr(_compat, "host_reachable", lambda url, timeout=1.0: False)
    for key in ["vit_b32", "vit_b16_refinement"]:
        started = time.perf_counter()
        with pytest.raises(WeightsError, match="--weights PATH") as info:
            load_variant(key, pretrained=True)
        assert time.perf_counter() - started < 2
        assert "not reachable" in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        load_variant("vit_b16_gap")


def test_network_probe_tells_an_open_port_from_a_closed_one_quickly():
    """The probe that makes offline `pretrained=True` fail fast: True for a listening port,
    False (at once, not after timm's retries) for a closed one."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert _compat.host_reachable(f"http://127.0.0.1:{port}/", timeout=1.0)
    started = time.perf_counter()
    assert not _compat.host_reachable(f"http://127.0.0.1:{port}/", timeout=1.0)
    assert time.perf_counter() - started < 2.5
    assert not _compat.host_reachable("not a url")


def test_cifar_checkpoint_must_be_supplied():
    with pytest.raises(WeightsError, match="Google Drive.*weights=PATH"):
        load_variant("vit_b16_cifar100", pretrained=True)


@pytest.mark.parametrize("change", [{"patch_size": 4, "img_size": 56},
                                    {"patch_size": 8, "img_size": 32}])
def test_a_checkpoint_of_another_patch_size_or_grid_is_refused_not_resampled(tmp_path, change):
    """timm's checkpoint filter would resize the patch and position embeddings to fit: a
    checkpoint of another architecture must be refused, with the shapes named."""
    import timm

    variant = get_variant("toy")
    kwargs = {**dict(variant.model_kwargs), **change}
    other = timm.create_model(variant.timm_name, pretrained=False,
                              num_classes=variant.num_classes, **kwargs)
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match=r"does not fit toy.*shape of (pos_embed|patch_embed)"):
        load_variant("toy", weights=tmp_path / "other.safetensors")
    assert build_model(variant).pos_embed.shape != other.pos_embed.shape


def test_fused_attention_is_switched_inside_the_block_and_restored(tiny_variant):
    from vitcls_utils.model.layout import fused_attention

    model = load_variant("test_tiny")
    flags = lambda: {m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}  # noqa: E731
    assert flags() == {False}  # loaded for analysis: explicit attention
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        explicit = model(x)
        with fused_attention(model):
            assert flags() == {True}
            fused = model(x)
    assert flags() == {False}
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError), fused_attention(model):
        raise RuntimeError("an error inside")
    assert flags() == {False}  # restored on errors too


def test_the_original_vit_checkpoints_are_pinned_and_fit_timms_configs():
    import timm

    from vitcls_utils.model.registry import ORIGINAL_KEYS

    assert len(ORIGINAL_KEYS) == 8
    for key in ORIGINAL_KEYS:
        variant = get_variant(key)
        assert variant.tag and variant.tag.startswith("orig_in21k")  # never a bare name
        cfg = timm.models.get_pretrained_cfg(variant.timm_name)
        assert cfg is not None and cfg.num_classes == variant.num_classes, key
        assert tuple(cfg.mean) == variant.preprocess.mean and tuple(cfg.std) == variant.preprocess.std
        assert cfg.input_size[1:] == variant.preprocess.output_size
        assert variant.has_head == (variant.tag == "orig_in21k_ft_in1k")
        assert variant.classes == 1000 and get_variant(key + "_random").classes == 1000
        with torch.device("meta"):
            model = build_model(variant)
        assert TokenLayout.of(model).n_tokens == variant.n_tokens and variant.has_cls
        assert isinstance(model.head, torch.nn.Identity) != variant.has_head


def test_a_model_without_a_head_refuses_class_space_extraction_by_name(tmp_path):
    from vitcls_utils.base.errors import NoClassHeadError
    from vitcls_utils.stores.extraction import store_for

    with pytest.raises(NoClassHeadError, match="vit_orig_b32_in21k_random has no class head"):
        store_for("vit_orig_b32_in21k_random", dataset="toy", results_dir=str(tmp_path),
                  n_per_class=1)


def test_chapter6_models_are_pinned_and_fit_timms_configs():
    """The 384-px ViTs, the torchvision-V1 CNNs and the QuickGELU CLIP towers of chapter 6:
    pinned tags that timm knows, the classes and token counts of the built architecture."""
    import timm

    from vitcls_utils.model.registry import GHIASI_KEYS

    assert {get_variant(k).family for k in GHIASI_KEYS} == {"ghiasi", "cnn", "clip"}
    for key in GHIASI_KEYS:
        variant = get_variant(key)
        cfg = timm.models.get_pretrained_cfg(variant.timm_name)
        assert variant.tag and cfg is not None, key
        assert cfg.input_size[1:] == variant.preprocess.output_size, key
        assert variant.note.startswith("stand-in") == variant.tag.startswith("augreg"), key
        with torch.device("meta"):
            model = build_model(variant)
        if variant.is_vit:
            assert TokenLayout.of(model).n_tokens == variant.n_tokens, key
        else:
            assert variant.family == "cnn" and variant.tag == "tv_in1k" and model.num_classes == 1000
        if variant.family == "clip":
            assert not variant.has_head and isinstance(model.head, torch.nn.Identity)
            assert type(model.blocks[0].mlp.act).__name__ == "QuickGELU"
            assert tuple(cfg.mean) == variant.preprocess.mean
    toy_cnn = get_variant("toy_cnn")
    assert not toy_cnn.is_vit and toy_cnn.weights == "shipped"
