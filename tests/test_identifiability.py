"""Chapter 1 metrics against loops written from the paper's definitions (catalogue E2-E5a)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import memory_store
from scipy import stats as scipy_stats

from vitcls_utils.analysis import identifiability as ident
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.base.stats import wilcoxon_greater
from vitcls_utils.base.uncertainty import bootstrap


def fake_results(has_cls=True, n_images=6, n_blocks=3, n_tokens=5, classes=10, seed=0,
                 fingerprint="abc"):
    rng = np.random.default_rng(seed)
    shape = (n_images, 3 * n_blocks, n_tokens)
    rank = rng.integers(0, 3, shape)
    labels = rng.integers(0, classes, n_images)
    return memory_store(rank, kinds=("resid_post", "attn_out", "mlp_out"), classes=classes,
                        has_cls=has_cls, fingerprint=fingerprint, labels=labels,
                        pred=np.where(rng.random(n_images) < 0.5, labels,
                                      (labels + 1) % classes),
                        top1=rng.integers(0, classes, shape), true_logit=rng.normal(size=shape))


@pytest.mark.parametrize("has_cls", [True, False])
def test_rates_by_loops(has_cls):
    res = fake_results(has_cls)
    last = res.rank[:, 3 * 2]  # resid_post of the last block
    first_image = 1 if has_cls else 0
    per_image = [np.mean([last[i, t] == 0 for t in range(first_image, 5)]) for i in range(6)]
    assert ident.identifiability_rate(res) == pytest.approx(100 * np.mean(per_image))
    paper_per_image = [np.mean([last[i, t] == 0 for t in range(1, 5)]) for i in range(6)]
    assert ident.identifiability_rate(res, paper=True) == pytest.approx(100 * np.mean(paper_per_image))
    any_token = [any(last[i, t] == 0 for t in range(1, 5)) for i in range(6)]
    assert ident.images_with_identifiable_token(res, paper=True) == pytest.approx(100 * np.mean(any_token))
    assert ident.top1_accuracy(res) == pytest.approx(100 * np.mean(res.pred == res.labels))


def test_evolution_and_boxes():
    res = fake_results()
    frame = ident.evolution(res)
    r = 1 - res.rank[:, 0::3].astype(float) / 10
    for b in range(3):
        cls = frame[(frame.block == b + 1) & (frame.token == "[CLS]")].identifiability.item()
        img = frame[(frame.block == b + 1) & (frame.token == "image")].identifiability.item()
        assert cls == pytest.approx(r[:, b, 0].mean())
        assert img == pytest.approx(r[:, b, 1:].mean())
        # each image's value, by hand; their mean is the frame's value exactly
        rows = frame[frame.block == b + 1].set_index("token").identifiability_images
        np.testing.assert_allclose(rows["image"], r[:, b, 1:].mean(1), rtol=1e-6)
        np.testing.assert_allclose(rows["[CLS]"], r[:, b, 0], rtol=1e-6)
        assert bootstrap(rows["image"]).estimate == img
    boxes = ident.block_boxes(res)
    row = boxes[(boxes.block == 2) & (boxes.token == "image")].iloc[0]
    assert row["median"] == pytest.approx(np.median(r[:, 1, 1:]))
    assert row.whislo >= row.q1 - 1.5 * (row.q3 - row.q1) and row.whishi <= row.q3 + 1.5 * (row.q3 - row.q1)
    assert "[CLS]" not in set(ident.evolution(fake_results(has_cls=False)).token)


def test_wilcoxon_is_paired_over_images_and_tokens():
    res, rand = fake_results(seed=0), fake_results(seed=1)
    tests = ident.wilcoxon_vs_random(res, rand)
    # second definition: r = 1 - rank / C in float64, where rounding does not split these ties
    a = (1 - res.rank[:, 3].astype(np.float64) / 8).ravel()
    b = (1 - rand.rank[:, 3].astype(np.float64) / 8).ravel()
    expected = scipy_stats.wilcoxon(a, b, alternative="greater").pvalue
    assert tests.p_value[1] == pytest.approx(expected)
    paper = ident.wilcoxon_vs_random(res, rand, paper=True)  # the authors' float32 r
    a32 = res.identifiability("resid_post")[:, 1].ravel()
    b32 = rand.identifiability("resid_post")[:, 1].ravel()
    assert a32.dtype == np.float32
    assert paper.p_value[1] == pytest.approx(scipy_stats.wilcoxon(a32, b32, alternative="greater").pvalue)
    with pytest.raises(VitclsError, match="different stimuli"):
        ident.wilcoxon_vs_random(res, fake_results(fingerprint="other"))


def test_wilcoxon_greater_edge_cases():
    assert wilcoxon_greater(np.ones(5), np.ones(5)) == 1.0
    x = np.arange(20.0)
    assert wilcoxon_greater(x + 1, x) < 0.05 < wilcoxon_greater(x, x + 1)
    with pytest.raises(ValueError):
        wilcoxon_greater(np.ones(3), np.ones(4))


def test_block_change_rate_by_loops():
    res = fake_results()
    logits = res.true_logit[:, 0::3, 1:]
    frame = ident.block_change_rate(res)
    assert list(frame.block) == [2, 3]
    for k, b in enumerate([1, 2]):
        ups = [logits[i, b, t] > logits[i, b - 1, t] for i in range(6) for t in range(4)]
        assert frame.change_rate[k] == pytest.approx(np.mean(ups))
        assert frame.change_rate_images[k] == pytest.approx(np.reshape(ups, (6, 4)).mean(1))


def test_normalized_blocks_pair_average():
    frame = pd.DataFrame({"block": np.arange(1, 25), "token": "image",
                          "identifiability": np.arange(24, dtype=float)})
    paired = ident.normalized_blocks(frame, 24, "identifiability", ["token"])
    assert list(paired.block) == list(range(1, 13))
    assert paired.identifiability[0] == 0.5 and paired.identifiability[11] == 22.5
    assert ident.normalized_blocks(frame.head(12), 12, "identifiability") is not None
    with pytest.raises(VitclsError):
        ident.normalized_blocks(frame, 6, "identifiability")


def test_blocks_keep_their_own_numbers_and_only_12_from_block_1_are_compared(capsys):
    """A store of a Swin's last stage (blocks 11-12) is tabled under those numbers, and left
    out of the normalized comparison with a line that names its blocks."""
    import re

    twelve, swin = fake_results(n_blocks=12), fake_results(n_blocks=2, seed=1)
    swin.sites = [re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m.group(1)) + 10}.", s)
                  for s in swin.sites]
    swin.manifest["block_names"] = ["stage 4, block 1", "stage 4, block 2"]
    assert set(ident.evolution(swin).block) == {11, 12}
    assert list(ident.block_change_rate(swin).block) == [12]
    assert list(ident.wilcoxon_vs_random(swin, swin).block) == [11, 12]
    frames = ident.normalized_evolutions({"vit": twelve, "swin": swin})
    assert list(frames) == ["vit"] and list(frames["vit"].block.unique()) == list(range(1, 13))
    assert "swin (stage 4, block 1 to stage 4, block 2)" in capsys.readouterr().out
    with pytest.raises(VitclsError, match="no store"):
        ident.normalized_evolutions({"swin": swin})


def test_first_block_reaching_reads_the_matching_rows():
    blocks = pd.DataFrame({"edit": ["full"] * 3 + ["background"] * 3, "block": [1, 2, 3] * 2,
                           "image_identifiability": [0.5, 0.95, 0.99, 0.5, 0.6, 0.7]})
    assert ident.first_block_reaching(blocks, 0.9, edit="full") == 2
    assert ident.first_block_reaching(blocks, 0.9, edit="background") is None
    assert ident.first_block_reaching(blocks, 0.6, edit="background") == 2
    assert ident.first_block_reaching(blocks, 0.99) == 3  # no condition: every row


def test_headline_intervals_hold_the_headline_and_resample_images():
    from vitcls_utils.base.uncertainty import bootstrap

    res = fake_results(True, n_images=20, seed=4)
    intervals = ident.headline_intervals(res)
    numbers = ident.headline(res)
    for metric, interval in intervals.items():
        assert interval.estimate == pytest.approx(numbers[metric]), metric
        assert interval.low <= interval.estimate <= interval.high and interval.n == 20
    last = res.rank[:, 3 * 2]
    by_loop = [100 * np.mean([last[i, t] == 0 for t in range(1, 5)]) for i in range(20)]
    assert intervals["identifiability_rate"] == bootstrap(np.array(by_loop))
