"""Image decoding: every mode Pillow opens is converted to the RGB it shows (16-bit scaled, not
clipped) or refused, and each status is what the store counts and lists."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitcls_utils.datasets.images import CONVERTED, EXIF_IGNORED, OK, UNREADABLE, load_image

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (24, 20), dtype=np.uint8)
RGB = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = (GRAY.astype(np.uint16) * 257)  # the 8-bit values, widened exactly
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image, status = load_image(tmp_path / "g16.png")
    assert status == CONVERTED
    np.testing.assert_array_equal(np.asarray(image), np.repeat(GRAY[..., None], 3, -1))
    # Pillow's own conversion clips: what the old loader stored
    assert np.asarray(Image.open(tmp_path / "g16.png").convert("RGB")).mean() > 250


def test_thirty_two_bit_images_use_their_range_or_are_refused(tmp_path):
    Image.fromarray(GRAY.astype(np.int32)).save(tmp_path / "i8.tif")
    image, status = load_image(tmp_path / "i8.tif")
    assert status == CONVERTED and np.array_equal(np.asarray(image)[..., 0], GRAY)
    Image.fromarray(GRAY.astype(np.int32) * 1_000_000).save(tmp_path / "wide.tif")
    assert load_image(tmp_path / "wide.tif") == (None, UNREADABLE)
    Image.fromarray(GRAY.astype(np.float32) / 255).save(tmp_path / "float.tif")
    assert load_image(tmp_path / "float.tif") == (None, UNREADABLE)


@pytest.mark.parametrize("mode, suffix", [("L", "png"), ("1", "png"), ("P", "png"),
                                          ("RGBA", "png"), ("LA", "png"), ("CMYK", "tif"),
                                          ("YCbCr", "jpg")])
def test_other_modes_convert_to_what_pillow_shows(tmp_path, mode, suffix):
    source = Image.fromarray(RGB).convert(mode)
    source.save(tmp_path / f"x.{suffix}")
    image, status = load_image(tmp_path / f"x.{suffix}")
    assert image.mode == "RGB" and image.size == (20, 24)
    expected = np.asarray(Image.open(tmp_path / f"x.{suffix}").convert("RGB"))
    assert status == (OK if Image.open(tmp_path / f"x.{suffix}").mode == "RGB" else CONVERTED)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_exif_rotation_is_not_applied_and_has_its_own_status(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.fromarray(RGB).save(tmp_path / "r.png", exif=exif)
    image, status = load_image(tmp_path / "r.png")
    assert status == EXIF_IGNORED
    np.testing.assert_array_equal(np.asarray(image), RGB)  # pixels as stored, as timm reads them
    assert load_image(tmp_path / "broken.png") == (None, UNREADABLE)  # missing file
    (tmp_path / "half.png").write_bytes((tmp_path / "r.png").read_bytes()[:60])
    assert load_image(tmp_path / "half.png") == (None, UNREADABLE)
