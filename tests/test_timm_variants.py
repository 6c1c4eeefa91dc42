"""``timm:<name>`` variants: the key's grammar, preprocessing from timm's own config, the
random-init control, offline refusal naming --weights, and the store's record of tag and
weights."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import vitcls_utils.model.loading  # noqa: F401  (torchvision shim before timm)
from vitcls_utils.base.errors import UnknownVariantError, WeightsError
from vitcls_utils.model import registry
from vitcls_utils.model.loading import load_variant
from vitcls_utils.model.registry import get_variant
from vitcls_utils.model.timm_variants import parse_key
from vitcls_utils.running import run_file as runfile

import timm  # noqa: E402
import torch  # noqa: E402


def test_the_key_grammar():
    assert parse_key("timm:deit3_small_patch16_224") == ("deit3_small_patch16_224", None,
                                                         False, {})
    assert parse_key("timm:eva02_tiny_patch14_224.mim_in22k:random:img_size=56:classes=24") == (
        "eva02_tiny_patch14_224", "mim_in22k", True, {"img_size": 56, "classes": 24})
    for bad in ("timm:", "timm:x:random:random", "timm:x:img_size=0", "timm:x:colour=3"):
        with pytest.raises(UnknownVariantError):
            parse_key(bad)


def test_a_timm_variant_takes_its_tag_head_and_pooling_from_timm():
    v = get_variant("timm:deit3_small_patch16_224")
    assert (v.tag, v.num_classes, v.pooling, v.n_tokens, v.family) == (
        "fb_in1k", 1000, "token", 197, "timm")
    assert v.random_key == "timm:deit3_small_patch16_224:random"
    assert get_variant(v.random_key).random
    assert get_variant("timm:beit_base_patch16_224:random").pooling == "avg"
    swin = get_variant("timm:swin_tiny_patch4_window7_224:random:img_size=64")
    assert (swin.pooling, swin.n_tokens) == ("avg", 4)  # its last stage: 2x2 tokens of 32 px
    siglip = get_variant("timm:vit_base_patch16_siglip_224:random")
    assert (siglip.pooling, siglip.has_head) == ("map", False)
    clip = get_variant("timm:vit_base_patch16_clip_224.openai")  # 512-d text projection
    assert not clip.has_head and clip.drop_prefixes == ("head.",)
    for bad, word in (("timm:nosuch_model", "no model"), ("timm:deit3_small_patch16_224.x", "tag"),
                      ("timm:deit3_small_patch16_224:img_size=64", "random"),
                      ("timm:deit3_small_patch16_224:random:img_size=56", "multiple of 16")):
        with pytest.raises(UnknownVariantError, match=word):
            get_variant(bad)


def test_preprocessing_equals_timms_own_eval_transform():
    """Second computation: timm's create_transform on the same image."""
    key = "timm:beit_base_patch16_224:random"
    ours = get_variant(key).preprocess
    config = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(
        "beit_base_patch16_224").to_dict())
    theirs = timm.data.create_transform(**config)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8))
    expected = theirs(image)
    got = ours(image)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 0.02  # PIL vs torchvision resampling rounding


def test_an_explicit_preprocessing_override_is_kept():
    key = "timm:flexivit_small:random"
    custom = replace(get_variant(key).preprocess, mean=(0.0, 0.0, 0.0))
    registry.register(replace(get_variant(key), preprocess=custom))
    try:
        assert get_variant(key).preprocess.mean == (0.0, 0.0, 0.0)
    finally:
        registry.VARIANTS.pop(key)


def test_offline_pretrained_names_weights(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(WeightsError, match="--weights"):
        load_variant("timm:deit3_small_patch16_224")


def test_weights_ids_record_the_full_tag_and_the_file_hash(tmp_path):
    small = replace(get_variant("timm:deit3_small_patch16_224:random"),
                    key="timm:deit3_small_patch16_224:random:test",
                    model_kwargs=(("img_size", 32), ("depth", 1), ("embed_dim", 32),
                                  ("num_heads", 2)))
    registry.register(small)
    try:
        model = load_variant(small.key)
        assert "deit3_small_patch16_224.fb_in1k" in model.vitcls_info.weights_id
        path = tmp_path / "ft.safetensors"
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        again = load_variant(small.key, weights=path)
        assert "sha256=" in again.vitcls_info.weights_id
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(model(x), again(x))
    finally:
        registry.VARIANTS.pop(small.key)


def test_run_files_and_run_arguments_accept_timm_keys(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("controls: true\nvariants:\n  timm:beit_base_patch16_224:classes=24:\n"
                    "    dataset: toy\n  timm:nosuch: {}\n")
    with pytest.raises(runfile.RunFileError, match="no model 'nosuch'"):
        runfile.load_run_file(path)
    path.write_text("controls: true\nvariants:\n  timm:deit3_small_patch16_224:random:classes=24:"
                    "\n    dataset: toy\n")
    runs = runfile.load_run_file(path).variants
    assert [r.key for r in runs] == ["timm:deit3_small_patch16_224:random:classes=24"]
    runs = runfile.from_arguments(["timm:deit3_small_patch16_224:random"], "toy", None)
    assert runs[0].key == "timm:deit3_small_patch16_224:random:classes=24"  # the toy's head
    path.write_text("variants:\n  timm:deit3_small_patch16_224:\n    dataset: toy\n")
    with pytest.raises(runfile.RunFileError, match="classes=24 with --weights"):
        runfile.load_run_file(path)


def test_timm_variants_stay_out_of_the_registry_listing_and_name_why_they_are_headless():
    from vitcls_utils.model.projection import no_head_message

    key = "timm:vit_small_patch14_reg4_dinov2:random"
    assert get_variant(key) is get_variant(key)  # made once
    assert key not in {v.key for v in registry.list_variants()}
    assert "declares no class head" in no_head_message(key)


def test_a_random_head_takes_the_datasets_classes_and_a_published_one_must_fit():
    """The rule of registry.variant_for_data: a random-init timm key without ``:classes=``
    reads the toy set with a head of the toy's 24 classes (said in one line), a headless tower
    too; explicit classes, registry keys and folders are left alone; a published 1000-class
    head on the toy set is refused naming ``:classes=`` and the random control."""
    from vitcls_utils.base.errors import VitclsError
    from vitcls_utils.model.registry import variant_for_data

    said = []
    spec = variant_for_data("timm:deit3_small_patch16_224:random", "toy", say=said.append)
    assert (spec.key, spec.num_classes) == ("timm:deit3_small_patch16_224:random:classes=24", 24)
    assert len(said) == 1 and "24 classes" in said[0]
    dinov2 = variant_for_data("timm:vit_small_patch14_reg4_dinov2:random", "cifar100")
    assert dinov2.has_head and dinov2.num_classes == 100 and dinov2.classes == 100
    for key, kind in (("timm:deit3_small_patch16_224:random", "imagenet-s"),
                      ("timm:deit3_small_patch16_224:random", "folder"),
                      ("timm:deit3_small_patch16_224:random:classes=7", "toy"),
                      ("vit_b32_random", "toy"), ("timm:vit_small_patch14_reg4_dinov2", "toy")):
        assert variant_for_data(key, kind) is get_variant(key)
    with pytest.raises(VitclsError, match="classes=24 with --weights"):
        variant_for_data("timm:deit3_small_patch16_224", "toy")
    override = replace(get_variant("timm:flexivit_small:random"),
                       model_kwargs=(("depth", 1),))  # a register()ed row keeps its settings
    registry.register(override)
    try:
        derived = variant_for_data(override.key, "toy")
        assert derived.model_kwargs == (("depth", 1),) and derived.num_classes == 24
    finally:
        registry.VARIANTS.pop(override.key)
        registry.VARIANTS.pop(override.key + ":classes=24", None)


@pytest.mark.parametrize("key", [
    "timm:beit_base_patch16_224:random:img_size=32",
    "timm:eva02_tiny_patch14_224:random:img_size=28",
    "timm:vit_small_patch14_reg4_dinov2:random:img_size=28",
    "timm:vit_base_patch16_siglip_224:random:img_size=32",
    "timm:flexivit_small:random:img_size=32",
    "timm:swin_tiny_patch4_window7_224:random:img_size=64",
])
def test_vitcls_extract_works_for_each_family_with_a_plain_random_key(key, tmp_path, capsys):
    """Each family's full-size architecture at a toy-sized input (a 2x2 token grid): exit 0,
    the store holds every block (a Swin: its last stage), its head the toy's 24 classes."""
    import json

    from vitcls_utils.running.cli import main

    assert main(["extract", "--variant", key, "--data", "toy", "--n-per-class", "1", "--out",
                 str(tmp_path), "--quiet", "--device", "cpu"]) == 0, capsys.readouterr().err
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert manifest["config"]["variant"] == key + ":classes=24"
    assert manifest["num_classes"] == 24 and manifest["layout"]["grid"] == [2, 2]
    assert len(manifest["block_names"]) == (2 if "swin" in key else 12)


def test_vitcls_extract_on_the_toy_set_with_a_plain_random_timm_key(tmp_path, capsys):
    """`vitcls extract --variant timm:<name>:random --data toy` needs no extra key: exit 0,
    the log line and the store's configuration name the 24-class head; a published 1000-class
    head exits 2 before any weights load, naming the fix."""
    import json

    from vitcls_utils.running.cli import main

    out = tmp_path / "stores"
    argv = ["extract", "--data", "toy", "--n-per-class", "1", "--out", str(out), "--quiet",
            "--device", "cpu"]
    assert main(argv + ["--variant", "timm:deit3_small_patch16_224:random:img_size=32"]) == 0
    assert "random-init head of 24 classes" in capsys.readouterr().err
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    assert manifest["config"]["variant"].endswith(":img_size=32:classes=24")
    assert manifest["num_classes"] == 24
    assert main(argv + ["--variant", "timm:deit3_small_patch16_224"]) == 2
    assert ":classes=24" in capsys.readouterr().err
