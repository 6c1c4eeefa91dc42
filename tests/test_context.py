"""Chapter 2 metrics against loops written from the definitions (catalogue E7-E9, B5, B6)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import memory_store

from vitcls_utils.analysis import context as context_metrics
from vitcls_utils.base.errors import VitclsError


def make_results(rank, token_class=None, perturbation=None, pred=None, classes=10):
    """A store in memory: rank [I, L, N] at resid_post of L blocks, [CLS] at token 0."""
    return memory_store(rank, token_class=token_class, perturbation=perturbation, pred=pred,
                        classes=classes)


REMOVAL = {"kind": "remove_tokens", "keep": "class", "labels": "aligned", "indices": None}


def test_perturbed_rate_paper_and_consistent_aggregation():
    # image 0 kept [CLS] + tokens 1, 2; image 1 kept [CLS] only; image 2 had no mask
    last = [[0, 0, 3, -1], [0, -1, -1, -1], [-1, -1, -1, -1]]
    res = make_results(np.array(last)[:, None], perturbation=REMOVAL, pred=[0, 0, -1])
    # B6: mean over images of the fraction over kept tokens, [CLS] included
    assert context_metrics.perturbed_rate(res, paper=True) == pytest.approx(100 * (2 / 3 + 1) / 2)
    # consistent: pooled over kept image tokens: token 1 yes, token 2 no
    assert context_metrics.perturbed_rate(res) == pytest.approx(50.0)
    assert res.accuracy == 1.0  # the image that could not be run is left out
    with pytest.raises(VitclsError, match="not a perturbed"):
        context_metrics.perturbed_rate(make_results(np.zeros((1, 1, 4))))


def test_attention_perturbed_rate_counts_cls_the_papers_way():
    rng = np.random.default_rng(0)
    rank = rng.integers(0, 2, (5, 2, 6))
    res = make_results(rank, perturbation={"kind": "attention", "mode": "self_only"})
    last = rank[:, -1]
    assert context_metrics.perturbed_rate(res, paper=True) == pytest.approx(100 * (last == 0).mean())
    assert context_metrics.perturbed_rate(res) == pytest.approx(100 * (last[:, 1:] == 0).mean())


def test_unperturbed_group_rates_by_loops():
    rng = np.random.default_rng(1)
    rank = rng.integers(0, 3, (4, 2, 6))
    groups = rng.integers(0, 2, (4, 6))
    groups[:, 0] = -1
    groups[3] = -1  # an image without a mask belongs to neither group
    res = make_results(rank, groups)
    for name, code in (("class", 1), ("context", 0)):
        hits = [rank[i, -1, t] == 0 for i in range(4) for t in range(1, 6) if groups[i, t] == code]
        assert context_metrics.unperturbed_rate(res, name) == pytest.approx(100 * np.mean(hits))
    assert context_metrics.unperturbed_rate(res) == pytest.approx(100 * (rank[:, -1, 1:] == 0).mean())
    with pytest.raises(VitclsError, match="perturbed run"):
        context_metrics.unperturbed_rate(make_results(rank, groups, perturbation=REMOVAL))
    with pytest.raises(VitclsError, match="no token labels"):
        context_metrics.unperturbed_rate(make_results(rank), "class")


def test_group_identifiability_boxes_and_test():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 2, (30, 9))
    groups[:, 0] = -1
    # class tokens rank 0 from block 2 on; context tokens rank 0..9 throughout
    rank = rng.integers(0, 10, (30, 2, 9))
    rank[:, 1][groups == 1] = 0
    res = make_results(rank, groups)
    frame = context_metrics.group_identifiability(res)
    ident = 1 - rank / 10
    for block in (1, 2):
        for name, code in (("class-labeled", 1), ("context-labeled", 0)):
            row = frame[(frame.block == block) & (frame.group == name)].iloc[0]
            values = [ident[i, block - 1, t] for i in range(30) for t in range(1, 9)
                      if groups[i, t] == code]
            assert row.identifiability == pytest.approx(np.mean(values))
            assert row.tokens == len(values)
            first = [ident[0, block - 1, t] for t in range(1, 9) if groups[0, t] == code]
            assert row.sum_images[0] == pytest.approx(sum(first))
            assert row.tokens_images[0] == len(first) and row.tokens_images.sum() == len(values)
    boxes = context_metrics.group_boxes(res)
    assert set(boxes.token) == {"class-labeled", "context-labeled"}
    tests = context_metrics.group_test(res, n_permutations=99)
    assert tests.p_value[1] == pytest.approx(0.01) and tests.significant[1]
    with pytest.raises(VitclsError, match="keep every token"):
        context_metrics.group_identifiability(make_results(rank, groups, perturbation=REMOVAL))


def test_change_difference_is_the_class_minus_context_mean_increment_by_loops():
    """A5b against a loop over images and tokens written from its definition."""
    rng = np.random.default_rng(3)
    n_images, n_blocks, n_tokens = 4, 3, 7
    kinds = ("resid_post", "attn_out")
    logit = rng.normal(size=(n_images, n_blocks * len(kinds), n_tokens)).astype(np.float32)
    token_class = rng.integers(0, 2, (n_images, n_tokens)).astype(np.int8)
    token_class[:, 0] = -1
    res = memory_store(np.zeros(logit.shape), kinds=kinds, true_logit=logit,
                       token_class=token_class)
    table = context_metrics.change_difference(res, n_permutations=50, seed=1)
    assert table.block.tolist() == [2, 3]
    for row in table.itertuples():
        b = row.block - 1  # 0-based block of the attention output; its input is block b - 1
        on, off = [], []
        for i in range(n_images):
            for t in range(1, n_tokens):
                step = float(logit[i, 2 * b + 1, t]) - float(logit[i, 2 * (b - 1), t])
                (on if token_class[i, t] == 1 else off).append(step)
        assert row.difference == pytest.approx(np.mean(on) - np.mean(off), abs=1e-6)
        assert (row.class_tokens, row.context_tokens) == (len(on), len(off))
        assert 0 < row.p_value <= 1
        assert row.class_tokens_images.sum() == len(on)
        assert row.class_sum_images.sum() - row.context_sum_images.sum() == pytest.approx(
            sum(on) - sum(off), abs=1e-5)
    from vitcls_utils.report import vilas_tables
    shown = vilas_tables.change_difference_table(table)
    assert shown.difference.tolist() == table.difference.tolist()
    assert shown["95% CI"].iloc[0].startswith("[") and shown["CI excludes zero"].dtype == bool
    paper = context_metrics.change_difference(res, n_permutations=50, seed=1, paper=True)
    assert (paper.p_value <= table.p_value).all()  # count/n never exceeds (1 + count)/(1 + n)


def test_paper_blocks_are_figure_3a_blocks_at_the_same_depth():
    assert context_metrics.paper_blocks(12) == [1, 6, 10, 12]
    assert context_metrics.paper_blocks(24) == [2, 12, 20, 24]
    assert context_metrics.paper_blocks(range(1, 13)) == [1, 6, 10, 12]
    assert context_metrics.paper_blocks([11, 12]) == [11, 12]  # a Swin's last stage, as numbered


def test_rate_intervals_pool_tokens_as_the_rates_do_and_count_images_left_out():
    rng = np.random.default_rng(2)
    rank = rng.integers(0, 3, (12, 2, 6))
    groups = rng.integers(0, 2, (12, 6))
    groups[:, 0], groups[:, 1], groups[:, 2] = -1, 1, 0  # every image has both groups
    groups[3] = -1  # but this one: no mask, excluded from a group's interval, and counted
    res = make_results(rank, groups)
    for name in ("class", "context"):
        interval = context_metrics.rate_interval(res, name)
        assert interval.estimate == pytest.approx(context_metrics.unperturbed_rate(res, name))
        assert interval.excluded == 1 and interval.low <= interval.estimate <= interval.high
    assert context_metrics.rate_interval(res).estimate == pytest.approx(
        context_metrics.unperturbed_rate(res))
    last = [[0, 0, 3, -1], [0, -1, -1, -1], [-1, -1, -1, -1], [0, 3, 0, 0]]
    removed = make_results(np.array(last)[:, None], perturbation=REMOVAL, pred=[0, 0, -1, 0])
    interval = context_metrics.rate_interval(removed)
    assert interval.estimate == pytest.approx(context_metrics.perturbed_rate(removed))
    assert interval.excluded == 2  # image 1 kept no image token, image 2 was not run


def test_the_drop_is_paired_over_images_by_a_loop():
    from vitcls_utils.base.uncertainty import paired_difference

    rng = np.random.default_rng(6)
    clean_rank = rng.integers(0, 2, (10, 2, 6))
    hit = rng.random((10, 2, 6)) < 0.3
    perturbed = make_results(np.where(hit, 0, 2),
                             perturbation={"kind": "attention", "mode": "self_only"})
    clean = make_results(clean_rank)
    before = [100 * np.mean(clean_rank[i, -1, 1:] == 0) for i in range(10)]
    after = [100 * np.mean(hit[i, -1, 1:]) for i in range(10)]
    drop = context_metrics.drop_interval(clean, perturbed)
    assert drop == paired_difference(np.array(before), np.array(after))
    same = context_metrics.drop_interval(clean, make_results(
        clean_rank, perturbation={"kind": "attention", "mode": "self_only"}))
    assert (same.low, same.high, same.p_value) == (0.0, 0.0, 1.0)
