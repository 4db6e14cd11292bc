"""Short strings rendered with Pillow's built-in bitmap font, as boolean ink masks scaled by whole pixels."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPH_CANVAS_MARGIN = 2
"""Blank pixels around the string while rasterising, so no glyph is clipped before the ink box is cropped."""


@lru_cache(maxsize=1)
def bitmap_font() -> ImageFont.ImageFont:
    """Pillow's default *bitmap* font (courB08); identical on every machine, FreeType or not."""
    # `load_default()` returns a FreeType font when FreeType is available (Pillow >= 10.1); the bitmap one has
    # its own loader there.
    loader = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    return loader()


def text_ink_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean ink mask [height, width] of `text`, cropped to the ink and enlarged `scale` times (nearest)."""
    if not text:
        raise ValueError("text must be a non-empty string.")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}.")
    font = bitmap_font()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 2 * GLYPH_CANVAS_MARGIN, bottom - top + 2 * GLYPH_CANVAS_MARGIN), 0)
    ImageDraw.Draw(canvas).text((GLYPH_CANVAS_MARGIN - left, GLYPH_CANVAS_MARGIN - top), text, fill=255, font=font)
    ink_box = canvas.getbbox()
    if ink_box is None:
        raise ValueError(f"The bitmap font draws no ink for {text!r}.")
    mask = np.asarray(canvas.crop(ink_box)) > 0
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)
