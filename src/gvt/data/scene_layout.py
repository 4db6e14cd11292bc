"""What a synthetic scene contains and where: the generation knobs, the layout dataclasses and their sampler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .bitmap_text import text_ink_mask
from .scene_vocabulary import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    OBJECT_COLOURS,
    SHAPE_NAMES,
    TEXT_ALPHABET,
)

MIN_IMAGE_SIZE = 32
TEXT_IMAGE_PIXELS_PER_FONT_PIXEL = 56
"""The bitmap font is enlarged by image_size // 56 (x2 at 112 px, x4 at 224 px), so strings stay legible."""
GRADIENT_DIRECTIONS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")

BBox = tuple[int, int, int, int]
"""Pixel box (x0, y0, x1, y1), half-open: x0 <= x < x1, y0 <= y < y1."""


@dataclass(frozen=True)
class SyntheticSceneConfig:
    """Knobs of the scene generator (sizes are fractions of the image side)."""

    max_objects: int = 8
    max_object_types: int = 4
    min_object_fraction: float = 0.14
    max_object_fraction: float = 0.30
    max_overlap_fraction: float = 0.30
    """Largest share of the smaller box that another box may cover: some occlusion, every object still visible."""
    same_colour_gap: int = 2
    """Pixels kept between two objects of the same colour, which would otherwise merge into one blob."""
    placement_attempts: int = 40
    text_probability: float = 0.5
    max_text_length: int = 4
    text_clearance: int = 2
    """Pixels (before font scaling) kept free of objects around the drawn string."""
    colour_jitter: int = 12
    noise_std: float = 8.0
    num_count_questions: int = 4
    max_presence_pairs: int = 2
    """Up to this many 'yes' presence questions per scene, and as many 'no' ones."""

    def __post_init__(self) -> None:
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {self.max_objects}.")
        if self.max_object_types < 1:
            raise ValueError(f"max_object_types must be >= 1, got {self.max_object_types}.")
        if not 0 < self.min_object_fraction <= self.max_object_fraction < 1:
            raise ValueError(
                "Need 0 < min_object_fraction <= max_object_fraction < 1, got "
                f"{self.min_object_fraction} and {self.max_object_fraction}."
            )
        if not 0 <= self.max_overlap_fraction < 1:
            raise ValueError(f"max_overlap_fraction must be in [0, 1), got {self.max_overlap_fraction}.")
        if not 0 <= self.text_probability <= 1:
            raise ValueError(f"text_probability must be in [0, 1], got {self.text_probability}.")
        if self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1, got {self.max_text_length}.")


@dataclass(frozen=True)
class SceneObject:
    """One shape: its class, its colour name and its drawing box (which occlusion never changes)."""

    shape: str
    colour: str
    bbox: BBox

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "bbox": list(self.bbox)}

    @classmethod
    def from_any(cls, item: SceneObject | Mapping[str, Any]) -> SceneObject:
        """Accept a `SceneObject` or a dataset row's `{"shape", "colour", "bbox"}` mapping."""
        if isinstance(item, SceneObject):
            return item
        return cls(shape=item["shape"], colour=item["colour"], bbox=tuple(int(v) for v in item["bbox"]))


@dataclass(frozen=True)
class SceneBackground:
    """A flat colour, a two-colour linear gradient, or a flat colour under light noise."""

    kind: str
    colour: str
    end_colour: str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class SceneText:
    """A short string drawn with the bitmap font; `bbox` is the tight box of its ink."""

    text: str
    bbox: BBox
    scale: int


@dataclass(frozen=True)
class SceneLayout:
    """Everything the renderer and the captioner need; objects are listed in drawing (back-to-front) order."""

    image_size: int
    background: SceneBackground
    objects: tuple[SceneObject, ...]
    text: SceneText | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_scale_for(image_size: int) -> int:
    """Whole-pixel enlargement of the bitmap font for an image side."""
    return max(1, image_size // TEXT_IMAGE_PIXELS_PER_FONT_PIXEL)


def _overlap_fraction(box: BBox, other: BBox) -> float:
    """Intersection area of two boxes over the smaller of their areas."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    return width * height / smaller


def _grow(box: BBox, margin: int) -> BBox:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)


def _fits(
    box: BBox, colour: str, placed: list[SceneObject], keep_out: BBox | None, config: SyntheticSceneConfig
) -> bool:
    """Clear of the string, within the occlusion budget, and apart from every object of the same colour."""
    if keep_out is not None and _overlap_fraction(box, keep_out) > 0:
        return False
    for other in placed:
        if _overlap_fraction(box, other.bbox) > config.max_overlap_fraction:
            return False
        if other.colour == colour and _overlap_fraction(_grow(box, config.same_colour_gap), other.bbox) > 0:
            return False
    return True


def _sample_background(rng: np.random.Generator) -> SceneBackground:
    kind = str(rng.choice(BACKGROUND_KINDS))
    names = list(BACKGROUND_COLOURS)
    colour = names[rng.integers(len(names))]
    if kind != "gradient":
        return SceneBackground(kind=kind, colour=colour)
    others = [name for name in names if name != colour]
    end_colour = others[rng.integers(len(others))]
    direction = str(rng.choice(GRADIENT_DIRECTIONS))
    return SceneBackground(kind=kind, colour=colour, end_colour=end_colour, direction=direction)


def _sample_text(rng: np.random.Generator, image_size: int, config: SyntheticSceneConfig) -> SceneText | None:
    if rng.random() >= config.text_probability:
        return None
    length = int(rng.integers(1, config.max_text_length + 1))
    text = "".join(TEXT_ALPHABET[i] for i in rng.integers(len(TEXT_ALPHABET), size=length))
    scale = text_scale_for(image_size)
    height, width = text_ink_mask(text, scale).shape
    margin = config.text_clearance * scale
    if width + 2 * margin > image_size or height + 2 * margin > image_size:
        return None
    x0 = int(rng.integers(margin, image_size - width - margin + 1))
    y0 = int(rng.integers(margin, image_size - height - margin + 1))
    return SceneText(text=text, bbox=(x0, y0, x0 + width, y0 + height), scale=scale)


def _sample_object_types(
    rng: np.random.Generator, num_objects: int, config: SyntheticSceneConfig
) -> list[tuple[str, str]]:
    """(shape, colour) per object: a few distinct types, each used at least once, so counts above one are common."""
    num_colours = len(OBJECT_COLOURS)
    num_types = int(rng.integers(1, min(num_objects, config.max_object_types) + 1))
    type_ids = rng.choice(len(SHAPE_NAMES) * num_colours, size=num_types, replace=False)
    assignment = np.concatenate([type_ids, rng.choice(type_ids, size=num_objects - num_types)])
    rng.shuffle(assignment)
    colours = list(OBJECT_COLOURS)
    return [(SHAPE_NAMES[t // num_colours], colours[t % num_colours]) for t in assignment]


def sample_layout(
    rng: np.random.Generator, image_size: int, config: SyntheticSceneConfig | None = None
) -> SceneLayout:
    """Draw a background, an optional string and 0..max_objects shapes placed with bounded occlusion.

    An object that finds no place after `config.placement_attempts` tries is dropped, so the layout may hold
    fewer objects than first drawn; questions and captions are always derived from the returned objects.
    """
    config = config or SyntheticSceneConfig()
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}.")
    background = _sample_background(rng)
    text = _sample_text(rng, image_size, config)

    num_objects = int(rng.integers(0, config.max_objects + 1))
    object_types = _sample_object_types(rng, num_objects, config) if num_objects else []
    min_side = max(2, round(config.min_object_fraction * image_size))
    max_side = max(min_side, round(config.max_object_fraction * image_size))
    keep_out = None if text is None else _grow(text.bbox, config.text_clearance * text.scale)

    placed: list[SceneObject] = []
    for shape, colour in object_types:
        sides = rng.integers(min_side, max_side + 1, size=config.placement_attempts)
        corners = rng.random((config.placement_attempts, 2))
        for side, (u, v) in zip(sides.tolist(), corners.tolist()):
            x0, y0 = int(u * (image_size - side + 1)), int(v * (image_size - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if _fits(box, colour, placed, keep_out, config):
                placed.append(SceneObject(shape=shape, colour=colour, bbox=box))
                break
    return SceneLayout(image_size=image_size, background=background, objects=tuple(placed), text=text)
