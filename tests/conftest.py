"""Shared fixtures: tiny random-init timm ViTs of every supported layout, and tiny image folders."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Dict

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import pytest
from PIL import Image

from vitcls_utils.model import registry
from vitcls_utils.model.layout import disable_fused_attn
from vitcls_utils.datasets.kinds import IMAGENET_S_EXCLUDED, imagenet_wnids
from vitcls_utils.datasets.preprocess import Preprocess
from vitcls_utils.datasets.toy import TOY_PREPROCESS
from vitcls_utils.model.registry import Variant

import timm  # noqa: E402  (vitcls_utils imported first: torchvision shim)
import torch  # noqa: E402

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)

#: Tiny architectures covering every layout the hooks and projector must handle.
TINY_LAYOUTS: Dict[str, tuple] = {
    "cls": ("vit_tiny_patch16_224", {}),
    "layerscale": ("vit_tiny_patch16_224", {"init_values": 0.3}),
    "gap_rpn": ("vit_base_patch16_rpn_224", {"init_values": 0.7}),  # ResPostBlock, no CLS, avg
    "gap_prenorm": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "reg_tokens": ("vit_tiny_patch16_224", {"reg_tokens": 2}),
    "distilled": ("deit_tiny_distilled_patch16_224", {}),
}


def tiny_model(layout: str = "cls", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random-init timm ViT of the given layout, eval mode, explicit attention."""
    arch, extra = TINY_LAYOUTS[layout]
    timm.layers.set_fused_attn(False)
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**TINY, **extra, **overrides})
    disable_fused_attn(model)
    # timm zero-inits some heads and biases; give every parameter signal so no two logits tie
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "head" in name:
                p.normal_(0, 0.2)
    return model.eval().requires_grad_(False)


@pytest.fixture(params=list(TINY_LAYOUTS))
def any_tiny(request) -> torch.nn.Module:
    return tiny_model(request.param)


TINY_PREPROCESS = Preprocess(resize=(32, 32), crop=None, interpolation="bilinear",
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="test")


@pytest.fixture
def tiny_variant():
    """A registry entry for a tiny ViT (so load_variant/extract/CLI paths run in milliseconds)."""
    variant = Variant(
        key="test_tiny", label="tiny test ViT", arch="vit_tiny_patch16_224", tag=None,
        preprocess=TINY_PREPROCESS, num_classes=10, pooling="token", n_tokens=17,
        dataset="folder", paper_key="-", weights="random", random=True,
        model_kwargs=tuple(TINY.items()),
    )
    registry.register(variant)
    yield variant
    registry.VARIANTS.pop(variant.key, None)


#: a 3-block ViT on the toy images (56 px, 7x7 grid), random init: the tests' small toy model
TINY_TOY = Variant(
    key="test_tiny_toy", label="tiny toy ViT", arch="vit_tiny_patch16_224", tag=None,
    preprocess=TOY_PREPROCESS, num_classes=24, pooling="token", n_tokens=50,
    dataset="toy", paper_key="-", weights="random", random=True,
    model_kwargs=(("img_size", 56), ("patch_size", 8), ("embed_dim", 32), ("depth", 3),
                  ("num_heads", 2), ("num_classes", 24)))


@pytest.fixture
def tiny_toy_variant():
    """A registry entry for :data:`TINY_TOY`."""
    variant = TINY_TOY
    registry.register(variant)
    yield variant
    registry.VARIANTS.pop(variant.key, None)


@pytest.fixture
def tiny_cnn_variant():
    """A registry entry for a narrow random-init ResNet on the toy images (chapter 6's CNNs)."""
    variant = Variant(
        key="test_tiny_cnn", label="tiny toy CNN", arch="resnet18", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=24, pooling="avg", n_tokens=0, dataset="toy",
        paper_key="-", weights="random", random=True, family="cnn",
        model_kwargs=(("channels", (8, 8, 16, 16)), ("stem_width", 8)),
    )
    registry.register(variant)
    yield variant
    registry.VARIANTS.pop(variant.key, None)


def write_image(path: Path, seed: int, mode: str = "RGB", size=(40, 48)) -> Path:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 classes (integer folder names) x 3 images, one grayscale and one RGBA among them."""
    root = tmp_path / "images"
    for label in range(3):
        for j in range(3):
            write_image(root / str(label) / f"img{j}.jpg", seed=10 * label + j)
    write_image(root / "1" / "img0.jpg", seed=99, mode="L")
    (root / "2" / "img1.jpg").unlink()
    write_image(root / "2" / "img1.png", seed=98, mode="RGBA")
    return root


@pytest.fixture
def weights_unchanged() -> Callable[[torch.nn.Module], Callable[[], None]]:
    """Snapshot a model's state dict; calling the returned check asserts it is byte-identical."""

    def snapshot(model: torch.nn.Module) -> Callable[[], None]:
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def check() -> None:
            after = model.state_dict()
            assert before.keys() == after.keys()
            for key, value in before.items():
                assert torch.equal(value, after[key]), f"{key} changed"

        return check

    return snapshot


# ----------------------------------------------------------------------------------------------
# A fabricated ImageNet-S tree in the real on-disk format (test_datasets_real, test_batch)
# ----------------------------------------------------------------------------------------------
WNIDS = imagenet_wnids()
# class index 0 (6 images), 1 (5 images, one corrupt, one without mask), 2 (3 images: too few),
# an excluded class (5 images), class 3 (5 images)
TREE = {WNIDS[0]: 6, WNIDS[1]: 5, WNIDS[2]: 3, IMAGENET_S_EXCLUDED[0]: 5, WNIDS[3]: 5}


def category_ids():
    """Category ids (1-based lines of the categories file) chosen above 255 for one class."""
    return {WNIDS[0]: 1, WNIDS[1]: 300, WNIDS[2]: 2, IMAGENET_S_EXCLUDED[0]: 3, WNIDS[3]: 4}


def make_imagenet_s(root: Path, with_csv: bool = False) -> Path:
    base = root / "ImageNetS919"
    base.mkdir(parents=True)
    (base / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {i}\n"
                                                         for i, w in enumerate(WNIDS)))
    ids = category_ids()
    lines = ["n00000000"] * 300
    for wnid, cid in ids.items():
        lines[cid - 1] = wnid
    (base / "ImageNetS_categories_im919.txt").write_text("\n".join(lines) + "\n")
    for wnid, count in TREE.items():
        for j in range(count):
            name = f"ILSVRC2012_val_{j * 7 + 3:08d}"
            write_image(base / "validation" / wnid / f"{name}.JPEG", seed=j, size=(64, 48))
            mask = np.zeros((48, 64), dtype=np.int32)
            mask[:24, :32] = ids[wnid]
            mask[30:, 40:] = 1000  # the ignore value counts as context
            rgb = np.stack([mask % 256, mask // 256, np.zeros_like(mask)], -1).astype(np.uint8)
            (base / "validation-segmentation" / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(base / "validation-segmentation" / wnid / f"{name}.png")
    cls1 = sorted((base / "validation" / WNIDS[1]).iterdir())
    cls1[1].write_bytes(b"\xff\xd8\xff not a jpeg")
    (base / "validation-segmentation" / WNIDS[1] / f"{cls1[2].stem}.png").unlink()
    for j in range(12):
        write_image(base / "test" / WNIDS[0] / f"ILSVRC2012_test_{j:08d}.JPEG", seed=j)
    if with_csv:
        with open(base / "validation_stim_info.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["imagenet_id", "index", "cat", "img_name", "img_index"])
            for k, name in enumerate(sorted((base / "validation" / WNIDS[0]).iterdir())[1:]):
                writer.writerow([WNIDS[0], 0, "tench", name.stem, k])
            writer.writerow([WNIDS[3], 3, "x", sorted((base / "validation" / WNIDS[3]).iterdir())[4].name, 0])
    return root


def memory_store(rank, *, kinds=("resid_post",), classes: int = 10, has_cls: bool = True,
                 labels=None, pred=None, top1=None, true_logit=None, token_class=None,
                 perturbation=None, fingerprint: str = "f", key_mlp=None, key_attn=None):
    """A :class:`~vitcls_utils.stores.reader.Store` held in memory, for metric tests: ``rank``
    (and the other token arrays) [images, blocks x kinds, tokens] at the sites
    ``blocks.{b}.hook_{kind}`` in block-major order; [CLS] at token 0 when ``has_cls``. What is
    not given is zero (labels, top-1s, logits) or the labels (predictions)."""
    from vitcls_utils.stores.reader import Store

    rank = np.asarray(rank, dtype=np.int16)
    n_images, n_sites, _ = rank.shape
    sites = [f"blocks.{b}.hook_{k}" for b in range(n_sites // len(kinds)) for k in kinds]
    labels = np.zeros(n_images, np.int32) if labels is None else np.asarray(labels)
    config = {"variant": "x", "dataset": {"name": "toy", "fingerprint": fingerprint}}
    if perturbation is not None:
        config["perturbation"] = perturbation
    return Store(
        path="mem", sites=sites, labels=labels, status=np.zeros(n_images, np.int8),
        manifest={"num_classes": classes, "sites": sites, "config": config,
                  "layout": {"has_cls": has_cls, "num_prefix": int(has_cls)}},
        pred=labels.copy() if pred is None else np.asarray(pred), rank=rank,
        top1=np.zeros_like(rank) if top1 is None else np.asarray(top1, np.int16),
        true_logit=(np.zeros(rank.shape, np.float32) if true_logit is None
                    else np.asarray(true_logit, np.float32)),
        token_class=None if token_class is None else np.asarray(token_class, np.int8),
        token_class_paper=None, key_mlp=key_mlp, key_attn=key_attn)
