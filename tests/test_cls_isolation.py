"""CLS isolation and "drop patches after L" (vitcls_utils.analysis.cls_isolation) against the split forward
written out by hand, and the sweep against the plain model."""
import pytest
import torch

from vitcls_utils.analysis import cls_isolation as isolation
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.loading import load_variant

from conftest import tiny_model


def images(seed: int = 0, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def hand_drop(model, x: torch.Tensor, L: int) -> torch.Tensor:
    """Blocks 1..L on the whole sequence, then [CLS] alone through the rest."""
    h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    for block in model.blocks[:L]:
        h = block(h)
    h = h[:, :1]
    for block in model.blocks[L:]:
        h = block(h)
    return model.forward_head(model.norm(h))


@pytest.mark.parametrize("layout", ["cls", "layerscale"])
def test_isolation_is_the_split_forward(layout, weights_unchanged):
    model = tiny_model(layout)
    check = weights_unchanged(model)
    x = images()
    with torch.no_grad():
        plain = model(x)
        for L in range(len(model.blocks) + 1):
            with isolation.intervened(model, L, "isolate"):
                hooked = model(x)
            torch.testing.assert_close(hooked, isolation.split_forward(model, x, L),
                                       rtol=1e-5, atol=1e-5)
            with isolation.intervened(model, L, "drop"):
                dropped = model(x)
            torch.testing.assert_close(dropped, hand_drop(model, x, L), rtol=1e-5, atol=1e-5)
        assert torch.equal(model(x), plain)  # hooks gone
    check()


def test_l0_is_natural_and_full_isolation_ignores_the_image():
    model = tiny_model("cls")
    depth = len(model.blocks)
    with torch.no_grad():
        a, b = images(0), images(1)
        with isolation.intervened(model, 0):
            torch.testing.assert_close(model(a), model.forward_head(model.forward_features(a)))
        with isolation.intervened(model, depth):
            out_a, out_b = model(a), model(b)
        torch.testing.assert_close(out_a, out_b)  # [CLS] never met a patch
        torch.testing.assert_close(out_a[0], out_a[1])
        with isolation.intervened(model, depth, "drop"):
            torch.testing.assert_close(model(a), model.forward_head(model.forward_features(a)))
        assert not torch.allclose(model(a), model(b))


def test_gap_and_bad_l_are_refused():
    with pytest.raises(VitclsError, match="CLS"):
        isolation.intervention_hooks(tiny_model("gap_prenorm"), 1)
    with pytest.raises(VitclsError, match="0..3"):
        isolation.intervention_hooks(tiny_model("cls"), 4)
    with pytest.raises(VitclsError, match="mode"):
        isolation.intervention_hooks(tiny_model("cls"), 1, "cut")
    # the natural model needs no [CLS]: a GAP model is read per block at L = 0
    gap = tiny_model("gap_prenorm")
    assert isolation.intervention_hooks(gap, 0) == []
    assert isolation.intervention_hooks(gap, 3, "drop") == []


def test_sweep_endpoints_are_the_model(tiny_toy_variant):
    model = load_variant(tiny_toy_variant.key)
    data = build_dataset("toy", None, num_classes=24, n_per_class=2)
    frame = isolation.sweep(model, data, Ls=[0, 3], batch_size=16, progress=False)
    natural = frame.query("mode == 'isolate' and L == 0").iloc[0]
    assert frame.query("mode == 'drop' and L == 3").iloc[0].top1 == natural.top1
    from vitcls_utils.analysis.cls_isolation import labelled_batches
    hits1 = hits5 = n = 0
    with torch.no_grad():
        for x, y in labelled_batches(model, data, 16, "t", progress=False):
            logits = model(x)
            hits1 += int((logits.argmax(-1) == y).sum())
            hits5 += int((logits.topk(5, -1).indices == y[:, None]).any(-1).sum())
            n += len(y)
    assert natural.top1 == pytest.approx(100 * hits1 / n)
    assert natural.top5 == pytest.approx(100 * hits5 / n)
    assert len(natural.top1_images) == n and natural.top1_images.mean() == natural.top1
    by_block = isolation.identifiability_by_block(model, data, [0, 3], progress=False)
    assert set(by_block.L) == {0, 3} and len(by_block) == 6
    # fully isolated, [CLS] reads one class for every image: right for that class's 2 of 48
    full = by_block.query("L == 3 and block == 3").iloc[0]
    assert full.cls_top1 == pytest.approx(100 / 24)
    natural_last = by_block.query("L == 0 and block == 3").iloc[0]
    assert natural_last.cls_top1 == pytest.approx(natural.top1)


def test_a_gap_model_is_read_per_block_without_an_intervention():
    """Fig. 7's per-block rate runs on a GAP model (L = 0 changes nothing); [CLS] columns are
    NaN, and isolating anything is refused."""
    model = load_variant("toy_gap")
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    frame = isolation.identifiability_by_block(model, data, [0], progress=False)
    assert frame.cls_identifiability.isna().all() and frame.image_top1.notna().all()
    with pytest.raises(VitclsError, match="GAP"):
        isolation.identifiability_by_block(model, data, [0, 2], progress=False)
