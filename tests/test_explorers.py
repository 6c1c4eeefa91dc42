"""The explorers, driven as a reader would: what each shows against a second computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.report import explorers as widgets
from vitcls_utils.datasets.kinds import ImageFolderDataset
from vitcls_utils.analysis.explanation_maps import class_space_maps, gradient_rollout_maps
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.analysis.memories import KEY_TOPK, KINDS, Memories
from vitcls_utils.model.loading import load_variant

NAMES = [f"class {i}" for i in range(10)]


@pytest.fixture
def made(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny", seed=3)
    stimuli = ImageFolderDataset(image_folder, num_classes=10)
    store = open_store(extract(model, stimuli, tmp_path / "r", kinds=KINDS, key_topk=KEY_TOPK,
                               batch_size=4))
    return model, store, stimuli


def test_the_lens_shows_the_store_s_ranks_and_the_token_s_top_classes(made, weights_unchanged):
    model, store, stimuli = made
    unchanged = weights_unchanged(model)
    lens = widgets.ClassSpaceLens(model, store, stimuli, NAMES)
    for row in (0, 4):
        for block in (1, 3):
            for site in widgets.SITE_KINDS:
                shown = lens.set(image=row, block=block, site=site).shown()
                position = store.sites.index(f"blocks.{block - 1}.hook_{site}")
                expected = np.asarray(store.rank[row, position, 1:]).reshape(4, 4)
                np.testing.assert_array_equal(shown["rank"], expected)
                token = lens.state["token"]
                assert NAMES.index(shown["top5"][0][0]) == store.top1[row, position, 1 + token]
                logits = [v for _, v in shown["top5"]]
                assert logits == sorted(logits, reverse=True)
    other = lens.set(image=0, block=3, site="resid_post", **{"class": 7}).shown()
    assert other["class"] == "class 7"
    true = lens.set(**{"class": "true"}).shown()
    assert not np.array_equal(other["rank"], true["rank"]) or store.labels[0] == 7
    unchanged()


def test_controls_are_checked_and_the_widget_follows_them(made):
    model, store, stimuli = made
    lens = widgets.ClassSpaceLens(model, store, stimuli, NAMES)
    with pytest.raises(ValueError, match="block must be one of"):
        lens.set(block=9)
    with pytest.raises(ValueError, match="no control 'layer'"):
        lens.set(layer="mlp")
    box = lens.widget
    block = next(c for c in box.children if getattr(c, "description", "") == "block")
    block.value = 2  # as a reader moves the slider
    assert lens.state["block"] == 2 and lens.shown()["block"] == 2
    picture = box.children[-1].children[0]
    assert picture.value[:4] == b"\x89PNG"


def test_the_maps_explorer_equals_the_maps_computed_directly(made):
    model, store, stimuli = made
    explorer = widgets.ExplanationExplorer(model, store, stimuli, NAMES)
    explorer.set(image=2, block=2, head=2, target="alternative", alternative=5)  # heads from 1
    shown = explorer.shown()
    image, _ = stimuli.load(int(store.image_index[2]))
    batch = model.vitcls_info.variant.preprocess(image)[None].repeat(2, 1, 1, 1)
    targets = torch.tensor([int(store.labels[2]), 5])
    maps = class_space_maps(model, batch, targets, paper=True)
    np.testing.assert_allclose(shown["map"].ravel(), maps[1, 1, 1].numpy(), rtol=1e-5,
                               atol=1e-7)
    summed = explorer.set(head="sum").shown()["map"].ravel()
    np.testing.assert_allclose(summed, maps[1, 1].sum(0).numpy(), rtol=1e-5, atol=1e-7)
    rollout = gradient_rollout_maps(model, batch, targets)[1].numpy()
    np.testing.assert_allclose(explorer.shown()["rollout"].ravel(), rollout, rtol=1e-5)


def test_the_memory_explorer_counts_uses_as_a_loop_does(made):
    model, store, _ = made
    memories = Memories.of(model)
    explorer = widgets.MemoryExplorer(memories, store, NAMES)
    memory = explorer.strongest[(1, "mlp")][0]
    shown = explorer.set(block=2, layer="mlp", memory=memory).shown()
    column = memories.projection["mlp"][1][:, memory]
    assert [n for n, _ in shown["classes"]] == [NAMES[c] for c in column.topk(5).indices]
    uses = {}
    for i in range(len(store.labels)):
        count = sum(memory in store.key_mlp[i, 1, t] for t in range(store.key_mlp.shape[2]))
        if count:
            uses[i] = count
    listed = {row: count for row, _, count in shown["images"]}
    assert listed and all(uses[row] == count for row, count in listed.items())
    assert list(listed.values()) == sorted(listed.values(), reverse=True)
    assert all(count <= min(listed.values()) for row, count in uses.items()
               if row not in listed)


def test_twins_are_self_contained_and_hold_every_frame(made):
    model, store, stimuli = made
    lens = widgets.ClassSpaceLens(model, store, stimuli, NAMES)
    html = lens.twin(rows=2)
    assert "http" not in html.replace("http://www.w3.org", "")  # no request leaves the page
    assert html.count('data-control="image"') == 2
    assert html.count("data:image/png;base64") == 2
    memories = widgets.MemoryExplorer(Memories.of(model), store, NAMES).twin()
    assert "http" not in memories and "E · value" in memories


def test_show_displays_the_twin_for_the_book(made, monkeypatch, capsys):
    model, store, stimuli = made
    lens = widgets.ClassSpaceLens(model, store, stimuli, NAMES)
    monkeypatch.setenv(widgets.BOOK_ENV, "1")
    widgets.show(lens)
    assert "vitcls-twin" in capsys.readouterr().out or lens._widget is None


def test_the_lens_twin_is_made_from_the_store_alone(made):
    _, store, stimuli = made

    def no_weights():
        raise AssertionError("the twin loaded the model")

    html = widgets.ClassSpaceLens(no_weights, store, stimuli, NAMES).twin(rows=1)
    assert "vitcls-twin" in html


def test_a_twin_is_the_same_page_in_every_run(made):
    model, store, stimuli = made
    first = widgets.ClassSpaceLens(model, store, stimuli, NAMES).twin(rows=2)
    assert widgets.ClassSpaceLens(model, store, stimuli, NAMES).twin(rows=2) == first


@pytest.fixture
def toy_made(tiny_toy_variant, tmp_path):
    from vitcls_utils.datasets.kinds import ToyDataset

    model, stimuli = load_variant("test_tiny_toy"), ToyDataset(n_per_class=1)
    store = open_store(extract(model, stimuli, tmp_path / "r", kinds=KINDS, key_topk=KEY_TOPK,
                               batch_size=24, progress=False))
    return model, store, stimuli


def test_inputs_the_store_was_not_made_from_are_refused(toy_made, tiny_variant):
    """Issue 35, item 6: another model's weights, memories of another model, stimuli of
    another dataset and 30 names for 24 classes were all accepted (identifiability scaled by
    30); a GAP model gave a raw reshape error."""
    from dataclasses import replace

    from vitcls_utils.base.errors import StoreError
    from vitcls_utils.datasets.kinds import ToyDataset, class_names
    from vitcls_utils.model import registry

    model, store, stimuli = toy_made
    names = class_names("toy", 24)
    other = load_variant("test_tiny_toy", seed=1)
    with pytest.raises(StoreError, match="seed=1.*pass the model it was made with"):
        widgets.ClassSpaceLens(lambda: other, store, stimuli, names).shown()
    with pytest.raises(StoreError, match="pass the model it was made with"):
        widgets.ExplanationExplorer(other, store, stimuli, names)
    gap = registry.register(replace(registry.get_variant("test_tiny_toy"), key="test_tiny_gap",
                                    pooling="avg", model_kwargs=registry.get_variant(
                                        "test_tiny_toy").model_kwargs + (
                                        ("class_token", False), ("global_pool", "avg"))))
    try:
        with pytest.raises(StoreError, match="the model is test_tiny_gap"):
            widgets.ClassSpaceLens(load_variant(gap.key), store, stimuli, names).shown()
    finally:
        registry.VARIANTS.pop(gap.key)
    with pytest.raises(StoreError, match="toy train split.*toy val split"):
        widgets.ClassSpaceLens(model, store, ToyDataset(split="train", n_per_class=1), names)
    with pytest.raises(StoreError, match="30 class names for a store of 24 classes"):
        widgets.ClassSpaceLens(model, store, stimuli, names + names[:6])
    with pytest.raises(StoreError, match="memories .* are not of the model"):
        widgets.MemoryExplorer(Memories.of(load_variant("test_tiny")), store, names)
    assert widgets.MemoryExplorer(Memories.of(model), store, names).shown()["classes"]


def test_the_lens_shows_a_convit_whose_cls_joins_late(tmp_path):
    """Issue 35, item 6: a ConViT's blocks before its [CLS] have one token fewer, and the lens
    stacked them into an error; the absent [CLS] is NaN, the image tokens are the store's."""
    from vitcls_utils.datasets.kinds import ToyDataset, class_names

    model, stimuli = load_variant("toy_convit_random"), ToyDataset(n_per_class=1)
    store = open_store(extract(model, stimuli, tmp_path, batch_size=24, progress=False))
    lens = widgets.ClassSpaceLens(model, store, stimuli, class_names("toy", 24))
    for block in (1, store.n_blocks):
        shown = lens.set(image=0, block=block, site="resid_post").shown()
        position = store.sites.index(f"blocks.{block - 1}.hook_resid_post")
        np.testing.assert_array_equal(shown["rank"].ravel(), store.rank[0, position, 1:])
