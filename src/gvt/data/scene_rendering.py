"""Pixels of a scene layout: the RGB image, the aligned class-id label mask, and per-patch labels from it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .bitmap_text import text_ink_mask
from .scene_layout import BBox, SceneBackground, SceneLayout, SceneObject
from .scene_vocabulary import (
    BACKGROUND_CLASS_ID,
    BACKGROUND_COLOURS,
    DARK_LUMINANCE,
    NUM_PATCH_CLASSES,
    OBJECT_COLOURS,
    TEXT_CLASS_ID,
    luminance,
    object_class_id,
)

STAR_POINTS = 5
STAR_INNER_RADIUS_RATIO = 0.45
CROSS_ARM_FRACTION = 1 / 3
"""Width of a cross's arms, as a fraction of its box."""
MAX_TEXT_INK_LEVEL = 60
"""Strings are inked in a random grey level from 0 to this value (near black) on a light background, and from
255 - this value to 255 (near white) on a dark one."""
MIN_TEXT_CONTRAST = 100
"""Ink levels are clamped to differ from the background's mean luminance under the string by at least this much."""
DEFAULT_MIN_PATCH_COVERAGE = 0.25
"""A patch takes the label of its most common object class once that class covers this share of it."""


def _shape_polygon(shape: str, bbox: BBox) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape filling `bbox` (inclusive pixel coordinates)."""
    x0, y0 = bbox[0], bbox[1]
    x1, y1 = bbox[2] - 1, bbox[3] - 1
    width, height = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        # The outer points span 1 + cos(pi / STAR_POINTS) radii vertically: fill the box height exactly.
        radius = height / (1 + math.cos(math.pi / STAR_POINTS))
        centre_y = y0 + radius
        vertices = []
        for k in range(2 * STAR_POINTS):
            r = radius if k % 2 == 0 else radius * STAR_INNER_RADIUS_RATIO
            angle = -math.pi / 2 + k * math.pi / STAR_POINTS
            vertices.append((cx + r * math.cos(angle), centre_y + r * math.sin(angle)))
        return vertices
    if shape == "cross":
        half_arm_x, half_arm_y = width * CROSS_ARM_FRACTION / 2, height * CROSS_ARM_FRACTION / 2
        ax0, ax1, ay0, ay1 = cx - half_arm_x, cx + half_arm_x, cy - half_arm_y, cy + half_arm_y
        return [
            (ax0, y0), (ax1, y0), (ax1, ay0), (x1, ay0), (x1, ay1), (ax1, ay1),
            (ax1, y1), (ax0, y1), (ax0, ay1), (x0, ay1), (x0, ay0), (ax0, ay0),
        ]  # fmt: skip
    raise ValueError(f"Unknown polygonal shape {shape!r}.")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox: BBox, fill: int | tuple[int, int, int]) -> None:
    """Draw one filled shape (no anti-aliasing, so image and label mask cover the same pixels)."""
    inclusive_box = (bbox[0], bbox[1], bbox[2] - 1, bbox[3] - 1)
    if shape == "circle":
        draw.ellipse(inclusive_box, fill=fill)
    elif shape == "square":
        draw.rectangle(inclusive_box, fill=fill)
    else:
        draw.polygon(_shape_polygon(shape, bbox), fill=fill)


def _texture_sign(background: SceneBackground, image_size: int) -> np.ndarray:
    """[size, size] of +1 / -1: which of the two shades each pixel of a stripe or check texture takes."""
    index = np.arange(image_size)
    band = (index // background.period) % 2
    if background.pattern == "checks":
        parity = band[:, None] ^ band[None, :]
    elif background.direction == "horizontal":  # horizontal bands: the shade changes down the image
        parity = np.broadcast_to(band[:, None], (image_size, image_size))
    elif background.direction == "vertical":
        parity = np.broadcast_to(band[None, :], (image_size, image_size))
    else:
        parity = ((index[:, None] + index[None, :]) // background.period) % 2
    return np.where(parity == 1, 1.0, -1.0).astype(np.float32)


def render_background(background: SceneBackground, image_size: int) -> np.ndarray:
    """Background as float32 [size, size, 3] RGB (noise, if any, is added after the shapes)."""
    start = np.asarray(BACKGROUND_COLOURS[background.colour], dtype=np.float32)
    if background.kind == "textured":
        shaded = start + background.shade * _texture_sign(background, image_size)[..., None]
        return np.clip(shaded, 0, 255)
    if background.kind != "gradient":
        return np.broadcast_to(start, (image_size, image_size, 3)).copy()
    end = np.asarray(BACKGROUND_COLOURS[background.end_colour], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    if background.direction == "horizontal":
        weight = np.broadcast_to(ramp[None, :], (image_size, image_size))
    elif background.direction == "vertical":
        weight = np.broadcast_to(ramp[:, None], (image_size, image_size))
    else:
        weight = (ramp[None, :] + ramp[:, None]) / 2
    return start + weight[..., None] * (end - start)


def render_scene_image(
    layout: SceneLayout, rng: np.random.Generator, noise_std: float, colour_jitter: int
) -> Image.Image:
    """RGB image of a layout; `rng` only drives appearance (colour jitter, ink level, noise), never geometry.

    Strings are inked near black, or near white where the background under them is dark (`MIN_TEXT_CONTRAST`)."""
    size = layout.image_size
    background = render_background(layout.background, size)
    canvas = Image.fromarray(np.round(background).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    base_colours = np.array([OBJECT_COLOURS[o.colour] for o in layout.objects], dtype=np.int64).reshape(-1, 3)
    jitter = rng.integers(-colour_jitter, colour_jitter + 1, size=base_colours.shape)
    fills = np.clip(base_colours + jitter, 0, 255).tolist()
    for scene_object, fill in zip(layout.objects, fills):
        draw_shape(draw, scene_object.shape, scene_object.bbox, tuple(fill))
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    if layout.text is not None:
        x0, y0, x1, y1 = layout.text.bbox
        ink = text_ink_mask(layout.text.text, layout.text.scale)
        level = int(rng.integers(0, MAX_TEXT_INK_LEVEL + 1))
        under = luminance(background[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
        if under < DARK_LUMINANCE:
            level = max(255 - level, min(round(under) + MIN_TEXT_CONTRAST, 255))
        else:
            level = min(level, max(round(under) - MIN_TEXT_CONTRAST, 0))
        pixels[y0:y1, x0:x1][ink] = float(level)
    if layout.background.kind == "noisy":
        pixels += rng.normal(0.0, noise_std, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), mode="RGB")


def render_label_mask(
    objects: Sequence[SceneObject | Mapping[str, Any]], image_size: int, text_bbox: Sequence[int] | None = None
) -> np.ndarray:
    """Class-id mask [size, size] (uint8): 0 background, `object_class_id` per shape, `TEXT_CLASS_ID` on the string.

    Shapes are drawn in list order, so later objects occlude earlier ones exactly as in the image.
    """
    canvas = Image.new("L", (image_size, image_size), BACKGROUND_CLASS_ID)
    draw = ImageDraw.Draw(canvas)
    for item in objects:
        scene_object = SceneObject.from_any(item)
        draw_shape(
            draw, scene_object.shape, scene_object.bbox, object_class_id(scene_object.shape, scene_object.colour)
        )
    mask = np.asarray(canvas).copy()
    if text_bbox is not None and len(text_bbox) == 4:
        x0, y0, x1, y1 = (int(v) for v in text_bbox)
        mask[y0:y1, x0:x1] = TEXT_CLASS_ID
    return mask


def patch_labels_from_mask(
    label_mask: np.ndarray, patch_size: int, min_coverage: float = DEFAULT_MIN_PATCH_COVERAGE
) -> np.ndarray:
    """Per-patch class ids [grid, grid] (int64) from a label mask.

    A patch gets its most frequent non-background class when that class covers at least `min_coverage` of the
    patch's pixels (ties go to the lower id), else 0. Patches without any object pixel are always 0.
    """
    height, width = label_mask.shape
    if height != width or height % patch_size:
        raise ValueError(f"The label mask ({height}x{width}) must be square and divisible by patch_size={patch_size}.")
    grid = height // patch_size
    pixels_per_patch = patch_size * patch_size
    # [grid, p, grid, p] -> [grid * grid, p * p]: one row of pixel labels per patch.
    per_patch = label_mask.reshape(grid, patch_size, grid, patch_size).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    offsets = np.arange(grid * grid, dtype=np.int64)[:, None] * NUM_PATCH_CLASSES
    counts = np.bincount((per_patch + offsets).ravel(), minlength=grid * grid * NUM_PATCH_CLASSES)
    foreground_counts = counts.reshape(grid * grid, NUM_PATCH_CLASSES)[:, BACKGROUND_CLASS_ID + 1 :]
    best = foreground_counts.argmax(axis=1) + BACKGROUND_CLASS_ID + 1
    covered = foreground_counts.max(axis=1) >= max(min_coverage * pixels_per_patch, 1)
    return np.where(covered, best, BACKGROUND_CLASS_ID).reshape(grid, grid).astype(np.int64)


def patch_labels(
    sample_objects: Sequence[SceneObject | Mapping[str, Any]],
    image_size: int,
    patch_size: int,
    text_bbox: Sequence[int] | None = None,
    min_coverage: float = DEFAULT_MIN_PATCH_COVERAGE,
) -> np.ndarray:
    """Per-patch class ids [image_size // patch_size]^2 for patch-level supervision (0 = background).

    `sample_objects` is a scene's `objects` column (or `SceneObject`s); `text_bbox` its `text_bbox` column.
    """
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a positive multiple of patch_size={patch_size}.")
    mask = render_label_mask(sample_objects, image_size, text_bbox)
    return patch_labels_from_mask(mask, patch_size, min_coverage)
