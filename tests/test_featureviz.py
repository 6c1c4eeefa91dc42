"""Feature visualisation: the optimiser raises its objective, is reproducible, leaves the model
as it was; top images and patch maps equal brute force; a unit's classes are chapter 3's."""
import numpy as np
import pytest
import torch

from vitcls_utils.analysis import featureviz
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import VitclsError
from vitcls_utils.model.loading import load_variant
from vitcls_utils.analysis.memories import Memories

FAST = featureviz.Recipe(steps=12, copies=2)


@pytest.fixture
def toy_model(tiny_toy_variant):
    return load_variant(tiny_toy_variant.key)


def _unit(model, block=1):
    """A unit the random model can excite: the one with the largest fc1 bias."""
    return int(model.blocks[block].mlp.fc1.bias.argmax())


def test_objective_rises_and_the_seed_fixes_the_image(toy_model):
    unit = _unit(toy_model)
    recipe = featureviz.Recipe(steps=30, copies=2, lr=0.05)
    first = featureviz.visualize(toy_model, 1, unit, recipe, seed=3)
    again = featureviz.visualize(toy_model, 1, unit, recipe, seed=3)
    other = featureviz.visualize(toy_model, 1, unit, recipe, seed=4)
    assert len(first.objective) == recipe.steps + 1
    # the objective is noisy (random augmentation), so compare the first and last fifths
    assert np.mean(first.objective[-6:]) > np.mean(first.objective[:6])
    assert torch.equal(first.image, again.image) and first.objective == again.objective
    assert not torch.equal(first.image, other.image)
    assert first.image.shape == (3, 56, 56)
    assert 0.0 <= float(first.image.min()) and float(first.image.max()) <= 1.0


def test_visualisation_leaves_weights_and_grad_flags_as_they_were(toy_model):
    toy_model.blocks[0].mlp.fc1.weight.requires_grad_(True)  # a mixed state to restore
    flags = {n: p.requires_grad for n, p in toy_model.named_parameters()}
    before = {n: p.detach().clone() for n, p in toy_model.state_dict().items()}
    featureviz.visualize(toy_model, 2, 0, FAST, seed=0)
    assert {n: p.requires_grad for n, p in toy_model.named_parameters()} == flags
    for name, value in toy_model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in toy_model.parameters())


def test_total_variation_equals_a_hand_loop():
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    total = 0.0
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        norms = []
        for img in x:
            for ch in img:
                diffs = [float(ch[i + dy, j + dx] - ch[i, j]) for i in range(5 - dy)
                         for j in range(max(0, -dx), 6 - max(0, dx))]
                norms.append(np.sqrt(np.sum(np.square(diffs))))
        total += np.mean(norms)
    assert float(featureviz.total_variation(x)) == pytest.approx(total, rel=1e-5)


class TheirGaussianNoise:
    """The authors' ``augmentation.pre.GaussianNoise`` counter, written out (the noise itself
    left out): built with ``shuffle_every=True`` as in ``vis35.py``, it shuffles once when
    built and once before every step, each shuffle using the counter and then moving it."""

    def __init__(self, std: float, max_iter: int):
        self.std_p, self.max_iter = std, max_iter
        self.rem = max_iter - 1
        self.shuffle()

    def shuffle(self):
        self.scale = self.rem * self.std_p / self.max_iter
        self.rem = (self.rem - 1 + self.max_iter) % self.max_iter

    def forward(self):
        self.shuffle()
        return self.scale


def test_the_noise_follows_their_counter_step_for_step_and_the_text_is_linear():
    recipe = featureviz.Recipe()
    theirs = TheirGaussianNoise(0.5, 400)
    for step in range(recipe.steps + 1):  # the loop runs steps + 1 iterations
        assert featureviz.noise_scale(recipe, step) == pytest.approx(theirs.forward(), abs=1e-15)
    written_out = {0: 0.5 * 398 / 400, 1: 0.5 * 397 / 400, 397: 0.5 / 400, 398: 0.0,
                   399: 0.5 * 399 / 400, 400: 0.5 * 398 / 400}
    for step, value in written_out.items():
        assert featureviz.noise_scale(recipe, step) == pytest.approx(value, abs=1e-15)
    linear = featureviz.Recipe(noise_schedule="linear")
    assert [featureviz.noise_scale(linear, i) for i in (0, 200, 400)] == [0.5, 0.25, 0.0]
    short = featureviz.Recipe(steps=12, copies=2)
    theirs = TheirGaussianNoise(0.5, 12)
    assert [featureviz.noise_scale(short, i) for i in range(13)] == pytest.approx(
        [theirs.forward() for _ in range(13)])


@pytest.mark.parametrize("schedule", ["authors", "linear"])
def test_augment_adds_the_scheduled_noise(schedule):
    recipe = featureviz.Recipe(steps=400, copies=3, noise_schedule=schedule)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for step in (0, 398, 399, 400):
        got = featureviz.augment(x, recipe, step, 2, torch.Generator().manual_seed(step))
        gen = torch.Generator().manual_seed(step)  # the same draws, in augment's order
        mu = torch.rand(3, 3, 1, 1, generator=gen) * 2 - 1
        sigma = torch.exp(torch.rand(3, 3, 1, 1, generator=gen) * 2 - 1)
        noise = torch.randn(3, 3, 1, 1, generator=gen)
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
        scale = (0.5 * ((398 - step) % 400) / 400 if schedule == "authors"
                 else 0.5 * (1 - step / 400))
        expected = torch.roll((x - mu) / sigma + scale * noise, shifts=(dy, dx), dims=(-2, -1))
        torch.testing.assert_close(got, expected)


def test_top_images_equal_per_image_brute_force(toy_model):
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    top = featureviz.top_images(toy_model, data, blocks=[0, 2], k=3, batch_size=5,
                                progress=False)
    preprocess = toy_model.vitcls_info.variant.preprocess
    x = torch.stack([preprocess(data.load(i)[0]) for i in range(len(data))])
    acts = {b: _all_units(toy_model, x, b) for b in (0, 2)}
    for row, b in enumerate(top.blocks):
        a = acts[b]  # [I, U]
        expect = torch.argsort(a, dim=0, descending=True, stable=True)[:3].T.numpy()
        np.testing.assert_array_equal(top.indices[row], expect)
        np.testing.assert_allclose(top.values[row], np.sort(a.numpy(), 0)[::-1][:3].T, rtol=1e-5)
        np.testing.assert_allclose(top.mean[row], a.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert top.of(2, 0) == top.indices[1, 0].tolist()
    assert featureviz.strongest_units(top, 2, n=2)[0] == int(
        np.argmax(top.values[1, :, 0] - top.mean[1]))


def _all_units(model, x, block):
    """Every unit's patch-mean activation, from a forward written out by hand up to the MLP."""
    with torch.no_grad():
        z = model._pos_embed(model.patch_embed(x))
        for blk in model.blocks[:block]:
            z = blk(z)
        blk = model.blocks[block]
        z = z + blk.ls1(blk.attn(blk.norm1(z)))
        hidden = blk.mlp.act(blk.mlp.fc1(blk.norm2(z)))
    return hidden[:, 1:].mean(1)


def test_patch_map_is_the_hidden_activation_per_patch(toy_model):
    data = build_dataset("toy", None, num_classes=24, n_per_class=1)
    x = torch.stack([toy_model.vitcls_info.variant.preprocess(data.load(i)[0]) for i in range(2)])
    unit = 5
    grid = featureviz.patch_activation_map(toy_model, x, 1, unit)
    with torch.no_grad():
        z = toy_model._pos_embed(toy_model.patch_embed(x))
        z = toy_model.blocks[0](z)
        blk = toy_model.blocks[1]
        z = z + blk.attn(blk.norm1(z))
        hidden = blk.mlp.act(blk.mlp.fc1(blk.norm2(z)))[:, 1:, unit]
    assert grid.shape == (2, 7, 7)
    torch.testing.assert_close(grid, hidden.reshape(2, 7, 7), rtol=1e-5, atol=1e-6)


def test_unit_classes_are_the_value_vectors_classes(toy_model):
    memories = Memories.of(toy_model)
    expect = memories.projection["mlp"][1][:, 7].topk(4).indices.tolist()
    assert featureviz.unit_classes(toy_model, 1, 7, k=4) == expect


def test_bad_units_and_recipes_name_the_fix(toy_model):
    with pytest.raises(VitclsError, match="block 9"):
        featureviz.visualize(toy_model, 9, 0, FAST)
    with pytest.raises(VitclsError, match="unit 100000"):
        featureviz.visualize(toy_model, 0, 100000, FAST)
    with pytest.raises(VitclsError, match="noise_kind"):
        featureviz.visualize(toy_model, 0, 0, featureviz.Recipe(steps=2, copies=1,
                                                                noise_kind="grain"))
    with pytest.raises(VitclsError, match="noise_schedule"):
        featureviz.visualize(toy_model, 0, 0, featureviz.Recipe(steps=2, copies=1,
                                                                noise_schedule="cosine"))
