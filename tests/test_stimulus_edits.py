"""Edited stimuli evaluated in one pass (vitcls_utils.analysis.stimulus_edits): the full edit is the variant's own
preprocessing, regions follow the masks, and the readouts agree with the plain model's."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitcls_utils.analysis import cls_isolation as isolation, patch_readout, stimulus_edits as edits
from vitcls_utils.datasets.kinds import build_dataset
from vitcls_utils.base.errors import DatasetError, VitclsError
from vitcls_utils.model.loading import load_variant
from vitcls_utils.datasets.toy import TOY_PREPROCESS


@pytest.fixture
def toy_data():
    return build_dataset("toy", None, num_classes=24, n_per_class=2)


def test_full_edit_is_the_preprocessing_and_regions_add_up(toy_data):
    image, _, ids, category = toy_data.load_with_mask(0)
    mask = ids == category
    full = edits.apply(edits.FULL, image, TOY_PREPROCESS, mask)
    torch.testing.assert_close(full, TOY_PREPROCESS(image))
    fg = edits.apply(edits.FOREGROUND, image, TOY_PREPROCESS, mask)
    bg = edits.apply(edits.BACKGROUND, image, TOY_PREPROCESS, mask)
    # in [0, 1] space (x * 0.5 + 0.5), F + B = X
    torch.testing.assert_close((fg * 0.5 + 0.5) + (bg * 0.5 + 0.5), full * 0.5 + 0.5)
    with pytest.raises(DatasetError, match="mask"):
        edits.apply(edits.FOREGROUND, image, TOY_PREPROCESS, None)


def test_all_edits_at_once_equal_each_edit_made_alone(toy_data):
    """apply_all shares one FFT per region; the low-pass is then that of the [0, 1] image."""
    from vitcls_utils.analysis.lowpass import lowpass

    image, _, ids, category = toy_data.load_with_mask(1)
    mask = ids == category
    chosen = edits.lowpass_edits([14, 5]) + [edits.FOREGROUND, edits.Edit(
        "fg lowpass 7", region="foreground", cutoff=7.0, shape="disk")]
    together = edits.apply_all(chosen, image, TOY_PREPROCESS, mask)
    raw = TOY_PREPROCESS(image) * 0.5 + 0.5  # the [0, 1] stimulus
    fg = TOY_PREPROCESS(Image.fromarray(np.asarray(image) * mask[..., None])) * 0.5 + 0.5
    for x, expect in zip(together, [raw, lowpass(raw, 14), lowpass(raw, 5), fg,
                                    lowpass(fg, 7, "disk")]):
        torch.testing.assert_close(x, (expect - 0.5) / 0.5, rtol=1e-5, atol=1e-5)


def test_evaluate_agrees_with_the_model_and_the_patch_readout(tiny_toy_variant, toy_data):
    model = load_variant(tiny_toy_variant.key)
    chosen = [edits.FULL, edits.FOREGROUND, edits.BACKGROUND] + edits.lowpass_edits([3])[1:]
    out = edits.evaluate_edits(model, toy_data, chosen, by_block=True, batch_size=16, num_workers=0,
                         progress=False)
    acc = out["accuracy"].set_index("edit")
    plain = isolation.sweep(model, toy_data, Ls=[0], modes=["isolate"], progress=False)
    assert acc.loc["full", "top1"] == pytest.approx(plain.top1[0])
    assert acc.loc["full", "top5"] == pytest.approx(plain.top5[0])
    # per image: the sweep's outcomes of the same images, in the same order
    assert np.array_equal(acc.loc["full", "top1_images"], plain.top1_images[0])
    assert acc.loc["background", "top5_images"].mean() == pytest.approx(acc.loc["background", "top5"])
    readout = patch_readout.patch_readout(model, toy_data, progress=False)
    last = out["blocks"].query("edit == 'full' and block == 3").iloc[0]
    assert last.image_top1 == pytest.approx(readout.top1.mean(), abs=1e-4)
    assert last.cls_top1 == pytest.approx(plain.top1[0])
    assert list(out["blocks"].edit.unique()) == [e.name for e in chosen]
    assert 0 < out["accuracy"].attrs["object_share"] < 1
    # the low-pass column is the model on filtered inputs, computed here a second way
    from vitcls_utils.analysis.lowpass import lowpass
    image, _ = toy_data.load(5)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    expected = edits.normalize(lowpass(x, 3), TOY_PREPROCESS)
    torch.testing.assert_close(edits.EditedStimuli(toy_data, TOY_PREPROCESS, chosen)[5]["x3"],
                               expected)


def test_cnn_output_only(tiny_cnn_variant, toy_data):
    model = load_variant(tiny_cnn_variant.key)
    out = edits.evaluate_edits(model, toy_data, [edits.FULL, edits.BACKGROUND], num_workers=0,
                         progress=False)
    assert out["blocks"].empty and len(out["accuracy"]) == 2
    with torch.no_grad():
        x = torch.stack([TOY_PREPROCESS(toy_data.load(i)[0]) for i in range(len(toy_data))])
        top1 = 100 * float((model(x).argmax(-1) == torch.tensor(toy_data.labels)).float().mean())
    assert out["accuracy"].top1[0] == pytest.approx(top1)
    with pytest.raises(VitclsError, match="CNN"):
        edits.evaluate_edits(model, toy_data, [edits.FULL], by_block=True, progress=False)


def test_region_edits_need_masks(tiny_toy_variant, image_folder):
    data = build_dataset("folder", str(image_folder), num_classes=24)
    with pytest.raises(DatasetError, match="masks"):
        edits.EditedStimuli(data, TOY_PREPROCESS, [edits.FOREGROUND])
