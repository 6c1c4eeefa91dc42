"""Chapter 3 metrics against loops written from the definitions (catalogue E5b, E6, E10-E13), the
streaming key reduction against full activations, and the model left untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import memory_store, tiny_model
from scipy import stats as scipy_stats

from vitcls_utils.analysis import memories as mem
from vitcls_utils.datasets.kinds import ImageFolderDataset, load_image
from vitcls_utils.base.errors import StoreError
from vitcls_utils.stores.extraction import extract, open_store
from vitcls_utils.model.hooks import run_with_cache
from vitcls_utils.model.loading import load_variant

KINDS = ("resid_post", "attn_out", "mlp_out", "resid_mid")


def fake_store(n_images=8, n_blocks=3, n_tokens=5, classes=6, d=4, seed=0, has_cls=True):
    """A chapter-3 store in memory with random ranks, top-1s, logits and key indices."""
    rng = np.random.default_rng(seed)
    shape = (n_images, n_blocks * len(KINDS), n_tokens)
    labels = rng.integers(0, classes, n_images)
    keys = lambda m: rng.integers(0, m, (n_images, n_blocks, n_tokens, 5)).astype(np.int16)  # noqa: E731
    pred = np.where(rng.random(n_images) < 0.5, labels, (labels + 1) % classes)
    rank = rng.integers(0, classes, shape)
    top1 = rng.integers(0, classes, shape)
    logit = rng.normal(size=shape)
    return memory_store(rank, kinds=KINDS, classes=classes, has_cls=has_cls, labels=labels,
                        pred=pred, top1=top1, true_logit=logit, key_mlp=keys(4 * d),
                        key_attn=keys(d))


def fake_memories(n_blocks=3, classes=6, d=4, seed=0):
    model = tiny_model("cls", seed=seed, embed_dim=d * 2, num_heads=2, depth=n_blocks,
                       num_classes=classes)
    return mem.Memories.of(model), model


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------
def test_value_projections_are_copies_and_equal_a_direct_matmul(weights_unchanged):
    model = tiny_model("cls", num_classes=7)
    check = weights_unchanged(model)
    memories = mem.Memories.of(model)
    check()
    E = model.head.weight
    for b, block in enumerate(model.blocks):
        for layer, W in (("attn", block.attn.proj.weight), ("mlp", block.mlp.fc2.weight)):
            assert torch.allclose(memories.projection[layer][b], E @ W, atol=1e-6)
            cos = torch.nn.functional.cosine_similarity(E[:, :, None], W[None], dim=1)
            assert torch.allclose(memories.cosine[layer][b], cos, atol=1e-6)
    frame = mem.class_value_agreement(memories)
    row = frame[(frame.block == 2) & (frame.layer == "mlp") & (frame["class"] == 3)]
    assert row.agreement.item() == pytest.approx(float(memories.cosine["mlp"][1][3].max()))
    memories.cosine["mlp"][0].mul_(0)  # the copies are the analysis's own
    check()


def test_agreement_wilcoxon_is_paired_by_class():
    trained = mem.class_value_agreement(mem.Memories.of(tiny_model("cls", seed=1)))
    random = mem.class_value_agreement(mem.Memories.of(tiny_model("cls", seed=2)))
    tests = mem.agreement_vs_random(trained, random)
    a = trained[(trained.block == 2) & (trained.layer == "attn")].agreement.to_numpy()
    b = random[(random.block == 2) & (random.layer == "attn")].agreement.to_numpy()
    expected = scipy_stats.wilcoxon(a, b, alternative="greater").pvalue
    assert tests[(tests.block == 2) & (tests.layer == "attn")].p_value.item() == pytest.approx(expected)


def test_value_vector_classes():
    memories, model = fake_memories()
    names = [f"c{i}" for i in range(6)]
    table = mem.value_vector_classes(memories, 1, [0, 3], names, k=2)
    column = (model.head.weight @ model.blocks[1].mlp.fc2.weight)[:, 3]
    assert table["top classes"][1] == ", ".join(names[i] for i in column.topk(2).indices)
    allowed = mem.value_vector_classes(memories, 1, [3], names, k=2, allowed=[0, 5])
    assert set(allowed["top classes"][0].split(", ")) == {"c0", "c5"}


# ----------------------------------------------------------------------------------------------
# Streaming key reduction
# ----------------------------------------------------------------------------------------------
def test_top_keys_from_the_stream_equal_full_activations(tiny_variant, image_folder, tmp_path):
    model = load_variant("test_tiny", seed=5)
    dataset = ImageFolderDataset(image_folder, num_classes=10)
    res = open_store(extract(model, dataset, tmp_path, kinds=KINDS, key_topk=5, batch_size=4))
    assert res.key_mlp.shape == (9, 3, 17, 5) and res.key_attn.shape == (9, 3, 17, 5)
    preprocess = model.vitcls_info.variant.preprocess
    for i, item in enumerate(dataset.items):
        image, _ = load_image(item.path)
        _, cache = run_with_cache(model, preprocess(image)[None])
        for b in range(3):
            pre = cache[f"blocks.{b}.mlp.hook_pre"][0]  # [N, 4d], before the GELU
            z = cache[f"blocks.{b}.attn.hook_z"][0].flatten(1)  # [N, d], head-major
            assert np.array_equal(res.key_mlp[i, b], pre.topk(5, -1).indices.numpy())
            assert np.array_equal(res.key_attn[i, b], z.topk(5, -1).indices.numpy())
    plain = open_store(extract(model, dataset, tmp_path, batch_size=4))
    assert plain.key_mlp is None and plain.path != res.path
    with pytest.raises(StoreError, match="key_topk=5"):
        mem.memory_compositionality(plain, mem.Memories.of(model))


# ----------------------------------------------------------------------------------------------
# Store metrics
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exact", [False, True])
def test_sublayer_change_rate_by_loops(exact):
    res = fake_store()
    frame = mem.sublayer_change_rate(res, exact=exact)
    z = res.true_logit
    site = {name: i for i, name in enumerate(res.sites)}
    for layer in ("attn", "mlp"):
        for b in (1, 2):
            for token, columns in (("[CLS]", [0]), ("image", range(1, 5))):
                out = site[f"blocks.{b}.hook_{layer}_out"]
                inp = (site[f"blocks.{b}.hook_resid_mid"] if exact and layer == "mlp"
                       else site[f"blocks.{b - 1}.hook_resid_post"])
                hits = [z[i, out, t] > z[i, inp, t] for i in range(8) for t in columns]
                row = frame[(frame.block == b + 1) & (frame.layer == layer)
                            & (frame.token == token)]
                assert row.rate.item() == pytest.approx(np.mean(hits))
                per_image = [np.mean([z[i, out, t] > z[i, inp, t] for t in columns])
                             for i in range(8)]
                assert row.rate_images.item() == pytest.approx(per_image)


@pytest.mark.parametrize("paper", [False, True])
def test_residual_composition_by_loops(paper):
    res = fake_store(classes=3)  # few classes: every category occurs
    frame = mem.residual_composition(res, paper=paper)
    t = res.top1
    site = {name: i for i, name in enumerate(res.sites)}
    for b in (1, 2):
        now, prev = t[:, site[f"blocks.{b}.hook_resid_post"]], t[:, site[f"blocks.{b - 1}.hook_resid_post"]]
        attn, mlp = t[:, site[f"blocks.{b}.hook_attn_out"]], t[:, site[f"blocks.{b}.hook_mlp_out"]]
        comp = [now[i, n] != prev[i, n] and now[i, n] != attn[i, n]
                and (paper or now[i, n] != mlp[i, n]) for i in range(8) for n in range(5)]
        row = frame[(frame.block == b + 1) & (frame.source == "composition")]
        assert row.percent.item() == pytest.approx(100 * np.mean(comp))
        per_image = 100 * np.array(comp, dtype=float).reshape(8, 5).mean(1)
        assert row.percent_images.item() == pytest.approx(per_image)
    corrected = mem.residual_composition(res).query("source == 'composition'").percent
    buggy = mem.residual_composition(res, paper=True).query("source == 'composition'").percent
    assert (buggy.to_numpy() >= corrected.to_numpy()).all() and (buggy > corrected).any()


@pytest.mark.parametrize("paper_text", [False, True])
def test_key_value_agreement_by_sets(paper_text):
    res, (memories, _) = fake_store(), fake_memories()
    frame = mem.key_value_agreement(res, memories, paper_text=paper_text)
    for layer, keys in (("attn", res.key_attn), ("mlp", res.key_mlp)):
        for b in range(3):
            P = memories.projection[layer][b]
            per_image = []
            for i in range(8):
                c = res.labels[i]
                hits = []
                for n in range(5):
                    tokens = set(keys[i, b, n].tolist())
                    if paper_text:
                        hits.append(any(c in P[:, j].topk(5).indices.tolist() for j in tokens))
                    else:
                        hits.append(bool(tokens & set(P[c].topk(5).indices.tolist())))
                per_image.append(np.mean(hits))
            for c in np.unique(res.labels):
                expected = 100 * np.mean([v for v, y in zip(per_image, res.labels) if y == c])
                got = frame[(frame.block == b + 1) & (frame.layer == layer)
                            & (frame["class"] == c)].rate.item()
                assert got == pytest.approx(expected)


def test_memory_compositionality_by_loops():
    res, (memories, _) = fake_store(), fake_memories()
    frame = mem.memory_compositionality(res, memories)
    site = {name: i for i, name in enumerate(res.sites)}
    for layer, keys in (("attn", res.key_attn), ("mlp", res.key_mlp)):
        for b in range(3):
            top_class = memories.projection[layer][b].argmax(0)
            own = res.top1[:, site[f"blocks.{b}.hook_{layer}_out"]]
            match = [own[i, n] in {int(top_class[j]) for j in keys[i, b, n]}
                     for i in range(8) for n in range(5)]
            row = frame[(frame.block == b + 1) & (frame.layer == layer)]
            assert row.match.item() == pytest.approx(100 * np.mean(match))
            assert row.hits_images.item().tolist() == np.reshape(match, (8, 5)).sum(1).tolist()
            assert row.tokens_images.item().tolist() == [5] * 8  # no token removed


def test_correct_vs_misclassified_uses_cls_agreement():
    res, (memories, _) = fake_store(n_images=30, classes=3), fake_memories(classes=3)
    res.key_mlp[:] = memories.class_memories("mlp", 0).numpy()[res.labels][:, None, None, :]
    res.key_mlp[~(res.pred == res.labels), :, 0] = -1  # misclassified: [CLS] never agrees
    frame = mem.correct_vs_misclassified(res, memories, n_permutations=99)
    row = frame[(frame.block == 1) & (frame.layer == "mlp")].iloc[0]
    assert row.difference == pytest.approx(100.0)
    assert row.p_value == pytest.approx(0.01) and row.significant
    correct = res.pred == res.labels
    assert row.agreement_images.tolist() == correct.astype(float).tolist()
    # the table's interval: correct minus misclassified means, whole images resampled
    from vitcls_utils.report import vilas_tables
    rng = np.random.default_rng(0)
    mixed = frame.assign(agreement_images=[rng.integers(0, 2, 30).astype(float)] * len(frame))
    shown = vilas_tables.misclassified_table(mixed, correct, seed=0)
    values = mixed.agreement_images[0]
    draws = np.random.default_rng(1).integers(0, 30, (3000, 30))  # a second, plain loop
    diffs = [100 * (values[d][correct[d]].mean() - values[d][~correct[d]].mean()) for d in draws]
    low, high = (float(x) for x in shown["95% CI"][0].strip("[]").split(", "))
    assert low == pytest.approx(np.percentile(diffs, 2.5), abs=6)
    assert high == pytest.approx(np.percentile(diffs, 97.5), abs=6)


def test_strongest_values():
    memories, model = fake_memories()
    best = (model.head.weight @ model.blocks[2].mlp.fc2.weight).max(0).values
    chosen = mem.strongest_values(memories, 2, n=3)
    assert chosen == best.argsort(descending=True)[:3].tolist()


def test_the_comparison_keeps_each_class_and_averages_a_24_block_models_pairs_per_class(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    stores = [SimpleNamespace(path=tmp_path / v, variant=v, n_blocks=n)
              for v, n in (("a", 12), ("b", 24))]
    rng = np.random.default_rng(0)
    for store in stores:
        store.path.mkdir()
        blocks = np.repeat(np.arange(1, store.n_blocks + 1), 3)
        mem.save_summary(store, "class_value_agreement", pd.DataFrame({
            "block": blocks, "layer": "mlp", "class": np.tile([0, 1, 2], store.n_blocks),
            "agreement": rng.random(len(blocks))}))
    summaries = mem.collect_summaries(stores)
    assert set(summaries) == {("a", "class_value_agreement"), ("b", "class_value_agreement")}
    a = summaries[("a", "class_value_agreement")]
    assert len(a) == 36 and set(a["class"]) == {0, 1, 2}  # a row per class: the unit resampled
    b = summaries[("b", "class_value_agreement")].set_index(["block", "class"]).agreement
    raw = pd.read_csv(tmp_path / "b" / "summaries" / "class_value_agreement.csv")
    by_hand = raw[(raw.block.isin([3, 4])) & (raw["class"] == 1)].agreement.mean()
    assert b[(2, 1)] == pytest.approx(by_hand) and len(b) == 36
