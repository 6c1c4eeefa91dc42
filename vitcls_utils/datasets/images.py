"""Decoding one stimulus image to 8-bit RGB, faithfully, with a status saying what was done.

Every mode Pillow opens is either converted to what it shows, or refused:

- RGB: as is (``OK``). L, 1, P (palette), RGBA, LA, CMYK, YCbCr: Pillow's conversion to RGB,
  alpha dropped as timm's and torchvision's loaders drop it (``CONVERTED``).
- 16-bit grayscale (I;16 and kin, or I from a PNG): scaled to 8 bits by value/257, rounded;
  Pillow's own conversion would clip every value above 255 to white (``CONVERTED``).
- 32-bit integer (I) holding values up to 255 or 65535: scaled from that range; wider, or
  floating point (F): no defined display range, refused (``UNREADABLE``).
- An EXIF orientation tag is *not* applied: the pixels are used as stored, as timm,
  torchvision's ImageFolder and the authors' loader use them, so that numbers match theirs; such
  images get their own status (``EXIF_IGNORED``) so that they are counted and listed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image

#: status codes stored per image by extraction
OK, CONVERTED, UNREADABLE, EXIF_IGNORED = 0, 1, 2, 3
STATUS_NAMES = {OK: "ok", CONVERTED: "converted to RGB", UNREADABLE: "unreadable (skipped)",
                EXIF_IGNORED: "EXIF orientation not applied"}
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
ORIENTATION_TAG = 0x0112


def _to_rgb(image: Image.Image) -> Tuple[Optional[Image.Image], int]:
    if image.mode == "RGB":
        return image.copy(), OK
    if image.mode in SIXTEEN_BIT or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if image.mode == "I" and image.format != "PNG":
            top = 255 if values.max(initial=0) <= 255 else 65535
        else:
            top = 65535
        if values.min(initial=0) < 0 or values.max(initial=0) > top:
            return None, UNREADABLE
        scaled = (values * 255 + top // 2) // top
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB"), CONVERTED
    if image.mode == "F":
        return None, UNREADABLE
    return image.convert("RGB"), CONVERTED


def load_image(path: Path) -> Tuple[Optional[Image.Image], int]:
    """Decode an image as 8-bit RGB. Returns (image or None, status: one of the codes above)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb, status = _to_rgb(image)
            rotated = image.getexif().get(ORIENTATION_TAG, 1) not in (1, None)
    except Exception:  # any decoding failure: the image is skipped and counted, not fatal
        return None, UNREADABLE
    if rgb is not None and rotated:
        status = EXIF_IGNORED
    return rgb, status
