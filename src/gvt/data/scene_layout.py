"""What a synthetic scene contains and where: the generation knobs, the layout dataclasses and their sampler."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .bitmap_text import text_ink_mask
from .scene_vocabulary import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    DARK_BACKGROUND_COLOURS,
    LIGHT_BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPE_NAMES,
    TEXT_ALPHABET,
    colour_distance,
    is_dark_colour,
    plural,
)

MIN_IMAGE_SIZE = 32
TEXT_IMAGE_PIXELS_PER_FONT_PIXEL = 56
"""The bitmap font is enlarged by image_size // 56 (x2 at 112 px, x4 at 224 px), so strings stay legible."""
GRADIENT_DIRECTIONS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
TEXTURE_PATTERNS: tuple[str, ...] = ("stripes", "checks")
TEXTURE_SHADE_RANGE = (10, 20)
"""A textured background alternates its colour +- this many levels (inclusive range)."""
TEXTURE_PERIOD_FRACTIONS = (0.05, 0.2)
"""Stripe / check period, as a fraction of the image side."""
SIZE_REGIMES: tuple[str, ...] = ("small", "large", "mixed")
SCENE_RETRIES = 2
"""Fresh placements of a scene whose focus objects did not all fit; the last one drops the string."""
PLACEMENT_ROUNDS = 4
"""Tries per object, each `placement_attempts` random boxes, with sides shrinking to the smallest one; then a scan
of every position at the smallest side."""

BBox = tuple[int, int, int, int]
"""Pixel box (x0, y0, x1, y1), half-open: x0 <= x < x1, y0 <= y < y1."""


@dataclass(frozen=True, kw_only=True)
class SyntheticSceneConfig:
    """Knobs of the scene generator (keyword-only; sizes are fractions of the image side). The defaults are GVTBench's training
    distribution; `shifted()` gives the shifted test distribution over the same vocabulary."""

    count_focus_probability: float = 0.6
    """Share of count-focused scenes: n (uniform in 0..max_focus_count) objects of one (shape, colour) kind plus
    0..max_distractors objects of other kinds; the first count question asks about the focus kind."""
    max_focus_count: int = 8
    max_distractors: int = 3
    max_objects: int = 8
    """The other scenes are a general mix: 0..max_objects objects of up to max_object_types (shape, colour) kinds."""
    max_object_types: int = 4
    min_object_fraction: float = 0.125
    """Smallest object side; keep >= patch / image (0.125 at 14 px patches and 112 px), so that two objects that do
    not overlap never have their box centres in the same patch."""
    max_object_fraction: float = 0.32
    size_regime_weights: tuple[float, float, float] = (0.25, 0.25, 0.5)
    """Chance of a scene's sizes being all small (lowest third of the range), all large (top third), or mixed."""
    crowding_area_fraction: float = 0.4
    """A scene of n objects caps their side at image * sqrt(this / n) (never below the smallest side), so they fit."""
    overlap_probability: float = 0.5
    """Share of scenes whose objects may overlap (up to max_overlap_fraction); in the others no two boxes touch."""
    max_overlap_fraction: float = 0.30
    """Largest share of the smaller box that another box may cover: some occlusion, every object still visible."""
    same_colour_gap: int = 2
    """Pixels kept between two objects of the same colour, which would otherwise merge into one blob."""
    placement_attempts: int = 40
    dark_background_probability: float = 0.3
    background_kind_weights: tuple[float, float, float, float] = (0.3, 0.25, 0.2, 0.25)
    """Relative chance of each of `BACKGROUND_KINDS` (flat, gradient, noisy, textured)."""
    min_object_contrast: float = 90.0
    """An object colour is only drawn on a background whose colours (every gradient shade) are at least this RGB
    distance away."""
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
        for name in ("max_objects", "max_focus_count", "max_distractors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_object_types < 1:
            raise ValueError(f"max_object_types must be >= 1, got {self.max_object_types}.")
        if not 0 < self.min_object_fraction <= self.max_object_fraction < 1:
            raise ValueError(
                "Need 0 < min_object_fraction <= max_object_fraction < 1, got "
                f"{self.min_object_fraction} and {self.max_object_fraction}."
            )
        if not 0 <= self.max_overlap_fraction < 1:
            raise ValueError(f"max_overlap_fraction must be in [0, 1), got {self.max_overlap_fraction}.")
        for name in (
            "count_focus_probability",
            "overlap_probability",
            "dark_background_probability",
            "text_probability",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        for name, size in (
            ("size_regime_weights", len(SIZE_REGIMES)),
            ("background_kind_weights", len(BACKGROUND_KINDS)),
        ):
            weights = getattr(self, name)
            if len(weights) != size or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(f"{name} needs {size} non-negative weights with a positive sum, got {weights}.")
        if not 0 < self.crowding_area_fraction <= 1:
            raise ValueError(f"crowding_area_fraction must be in (0, 1], got {self.crowding_area_fraction}.")
        if self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1, got {self.max_text_length}.")

    def shifted(self) -> SyntheticSceneConfig:
        """The shifted test distribution: same vocabulary, but every scene count-focused (counts uniform), mostly
        dark and textured backgrounds, sizes at the extremes of the range, and overlap more often."""
        return replace(
            self,
            count_focus_probability=1.0,
            dark_background_probability=0.6,
            background_kind_weights=(0.15, 0.15, 0.1, 0.6),
            size_regime_weights=(0.5, 0.5, 0.0),
            overlap_probability=0.8,
        )


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
    """A flat colour, a two-colour linear gradient (`end_colour`, `direction`), a flat colour under light noise, or
    a texture: `pattern` ("stripes" along `direction`, or "checks") of period `period` pixels, alternating the
    colour +- `shade` levels."""

    kind: str
    colour: str
    end_colour: str | None = None
    direction: str | None = None
    pattern: str | None = None
    period: int | None = None
    shade: int | None = None

    @property
    def colours(self) -> tuple[str, ...]:
        """Names of the colours it is made of (both ends of a gradient)."""
        return (self.colour,) if self.end_colour is None else (self.colour, self.end_colour)

    @property
    def is_dark(self) -> bool:
        """Whether its (first) colour is a dark one."""
        return is_dark_colour(self.colour)


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
    focus: tuple[str, str] | None = None
    """(shape, colour) of a count-focused scene's focus kind (which it holds 0..max_focus_count of), else None."""
    max_overlap_fraction: float = 0.0
    """The occlusion this scene allowed between two boxes (0: no two boxes intersect)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_scale_for(image_size: int) -> int:
    """Whole-pixel enlargement of the bitmap font for an image side."""
    return max(1, image_size // TEXT_IMAGE_PIXELS_PER_FONT_PIXEL)


def _overlap_fractions(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """[A, P] intersection area of each pair of boxes over the smaller of their areas (boxes [A, 4], [P, 4])."""
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return intersection / np.minimum(areas[:, None], other_areas[None, :])


def _grow(box: BBox, margin: int) -> BBox:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)


def _first_fit(
    boxes: np.ndarray,
    colour: str,
    placed: list[SceneObject],
    keep_out: BBox | None,
    max_overlap: float,
    same_colour_gap: int,
) -> int | None:
    """Index of the first candidate box that is clear of the string, within the occlusion budget, and apart from
    every object of the same colour; None if none is."""
    fits = np.ones(len(boxes), dtype=bool)
    if keep_out is not None:
        fits &= _overlap_fractions(boxes, np.array([keep_out]))[:, 0] == 0
    if placed:
        placed_boxes = np.array([o.bbox for o in placed])
        fits &= (_overlap_fractions(boxes, placed_boxes) <= max_overlap).all(axis=1)
        same = np.array([o.colour == colour for o in placed])
        if same.any():
            grown = boxes + np.array([-same_colour_gap, -same_colour_gap, same_colour_gap, same_colour_gap])
            fits &= (_overlap_fractions(grown, placed_boxes[same]) == 0).all(axis=1)
    hits = np.flatnonzero(fits)
    return int(hits[0]) if len(hits) else None


def visible_object_colours(background: SceneBackground, min_contrast: float) -> list[str]:
    """Object colours at least `min_contrast` (RGB distance) from every shade of the background (the whole segment
    between a gradient's ends)."""
    start = np.asarray(BACKGROUND_COLOURS[background.colour], dtype=np.float64)
    end = np.asarray(BACKGROUND_COLOURS[background.end_colour or background.colour], dtype=np.float64)
    span = end - start
    visible = []
    for name, rgb in OBJECT_COLOURS.items():
        offset = np.asarray(rgb, dtype=np.float64) - start
        t = float(np.clip(offset @ span / max(span @ span, 1e-9), 0.0, 1.0))
        if colour_distance(rgb, start + t * span) >= min_contrast:
            visible.append(name)
    return visible


def _sample_background(rng: np.random.Generator, image_size: int, config: SyntheticSceneConfig) -> SceneBackground:
    weights = np.asarray(config.background_kind_weights, dtype=np.float64)
    kind = BACKGROUND_KINDS[int(rng.choice(len(BACKGROUND_KINDS), p=weights / weights.sum()))]
    dark = rng.random() < config.dark_background_probability
    names = list(DARK_BACKGROUND_COLOURS if dark else LIGHT_BACKGROUND_COLOURS)
    colour = names[rng.integers(len(names))]
    if kind == "gradient":
        others = [name for name in BACKGROUND_COLOURS if name != colour]
        end_colour = others[rng.integers(len(others))]
        direction = GRADIENT_DIRECTIONS[rng.integers(len(GRADIENT_DIRECTIONS))]
        return SceneBackground(kind=kind, colour=colour, end_colour=end_colour, direction=direction)
    if kind == "textured":
        pattern = TEXTURE_PATTERNS[rng.integers(len(TEXTURE_PATTERNS))]
        direction = GRADIENT_DIRECTIONS[rng.integers(len(GRADIENT_DIRECTIONS))] if pattern == "stripes" else None
        low, high = (max(2, round(f * image_size)) for f in TEXTURE_PERIOD_FRACTIONS)
        period = int(rng.integers(low, high + 1))
        shade = int(rng.integers(TEXTURE_SHADE_RANGE[0], TEXTURE_SHADE_RANGE[1] + 1))
        return SceneBackground(
            kind=kind, colour=colour, direction=direction, pattern=pattern, period=period, shade=shade
        )
    return SceneBackground(kind=kind, colour=colour)


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


def _kind_pairs(colours: list[str]) -> list[tuple[str, str]]:
    return [(shape, colour) for shape in SHAPE_NAMES for colour in colours]


def _sample_mixed_kinds(
    rng: np.random.Generator, colours: list[str], config: SyntheticSceneConfig
) -> list[tuple[str, str]]:
    """(shape, colour) per object of a general-mix scene: a few distinct kinds, each used at least once."""
    num_objects = int(rng.integers(0, config.max_objects + 1))
    if not num_objects:
        return []
    pairs = _kind_pairs(colours)
    num_types = int(rng.integers(1, min(num_objects, config.max_object_types, len(pairs)) + 1))
    type_ids = rng.choice(len(pairs), size=num_types, replace=False)
    assignment = np.concatenate([type_ids, rng.choice(type_ids, size=num_objects - num_types)])
    return [pairs[t] for t in assignment]


def _sample_focused_kinds(
    rng: np.random.Generator, colours: list[str], config: SyntheticSceneConfig
) -> tuple[tuple[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Focus kind, its n objects and the distractors (objects of other kinds) of a count-focused scene."""
    pairs = _kind_pairs(colours)
    focus = pairs[rng.integers(len(pairs))]
    count = int(rng.integers(0, config.max_focus_count + 1))
    others = [pair for pair in pairs if pair != focus]
    num_distractors = int(rng.integers(0, config.max_distractors + 1))
    distractors = [others[i] for i in rng.integers(len(others), size=num_distractors)]
    return focus, [focus] * count, distractors


def _side_range(rng: np.random.Generator, image_size: int, num_objects: int, config: SyntheticSceneConfig):
    """(smallest allowed side, this scene's low side, this scene's high side) in pixels."""
    floor = max(2, math.ceil(config.min_object_fraction * image_size))
    top = max(floor, math.floor(config.max_object_fraction * image_size))
    weights = np.asarray(config.size_regime_weights, dtype=np.float64)
    regime = SIZE_REGIMES[int(rng.choice(len(SIZE_REGIMES), p=weights / weights.sum()))]
    third = round((top - floor) / 3)
    low, high = {"small": (floor, floor + third), "large": (top - third, top), "mixed": (floor, top)}[regime]
    if num_objects:
        high = max(floor, min(high, math.floor(image_size * math.sqrt(config.crowding_area_fraction / num_objects))))
        low = min(low, high)
    return floor, low, high


def _place(
    rng: np.random.Generator,
    shape: str,
    colour: str,
    sides: tuple[int, int, int],
    image_size: int,
    placed: list[SceneObject],
    keep_out: BBox | None,
    max_overlap: float,
    config: SyntheticSceneConfig,
) -> SceneObject | None:
    """A box for one object: random tries whose sides shrink round by round, then the first free position (in
    raster order, which packs tightly) at the smallest side."""
    floor, low, high = sides
    attempts = config.placement_attempts
    for round_index in range(PLACEMENT_ROUNDS):
        shrink = round_index / max(PLACEMENT_ROUNDS - 1, 1)
        round_high = round(high - (high - floor) * shrink)
        round_low = min(round(low - (low - floor) * shrink), round_high)
        side = rng.integers(round_low, round_high + 1, size=attempts)
        corner = (rng.random((attempts, 2)) * (image_size - side + 1)[:, None]).astype(np.int64)
        boxes = np.concatenate([corner, corner + side[:, None]], axis=1)
        hit = _first_fit(boxes, colour, placed, keep_out, max_overlap, config.same_colour_gap)
        if hit is not None:
            return SceneObject(shape=shape, colour=colour, bbox=tuple(int(v) for v in boxes[hit]))
    steps = np.arange(0, image_size - floor + 1)
    corner = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)
    boxes = np.concatenate([corner, corner + floor], axis=1)
    hit = _first_fit(boxes, colour, placed, keep_out, max_overlap, config.same_colour_gap)
    return None if hit is None else SceneObject(shape=shape, colour=colour, bbox=tuple(int(v) for v in boxes[hit]))


def _place_all(
    rng: np.random.Generator,
    required: list[tuple[str, str]],
    optional: list[tuple[str, str]],
    sides: tuple[int, int, int],
    image_size: int,
    keep_out: BBox | None,
    max_overlap: float,
    config: SyntheticSceneConfig,
) -> list[SceneObject] | None:
    """Place every required object (None if one finds no room), then the optional ones that find room."""
    placed: list[SceneObject] = []
    for index, (shape, colour) in enumerate(required + optional):
        scene_object = _place(rng, shape, colour, sides, image_size, placed, keep_out, max_overlap, config)
        if scene_object is not None:
            placed.append(scene_object)
        elif index < len(required):
            return None
    return placed


def sample_layout(
    rng: np.random.Generator, image_size: int, config: SyntheticSceneConfig | None = None
) -> SceneLayout:
    """Draw a background, an optional string and the objects of a count-focused or a general-mix scene.

    Object colours are drawn among those visible on the background. Objects of a crowded scene get smaller sides
    (see `crowding_area_fraction`); one that still finds no place is shrunk further, down to the smallest side. A
    focused scene always holds its n focus objects (placed first; if they do not fit, the placement starts again,
    the last time without the string; then a RuntimeError); a distractor or a general-mix object that finds no
    place at all is dropped, so questions and captions are always derived from the
    returned objects. The drawing order is shuffled after placement (the placement rules are symmetric).
    """
    config = config or SyntheticSceneConfig()
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}.")
    background = _sample_background(rng, image_size, config)
    text = _sample_text(rng, image_size, config)
    colours = visible_object_colours(background, config.min_object_contrast)
    if rng.random() < config.count_focus_probability:
        focus, required, optional = _sample_focused_kinds(rng, colours, config)
    else:
        focus, required, optional = None, [], _sample_mixed_kinds(rng, colours, config)
    max_overlap = config.max_overlap_fraction if rng.random() < config.overlap_probability else 0.0
    sides = _side_range(rng, image_size, len(required) + len(optional), config)
    for retry in range(SCENE_RETRIES + 1):
        if retry == SCENE_RETRIES:
            text = None  # the last resort: the string's room goes to the objects
        keep_out = None if text is None else _grow(text.bbox, config.text_clearance * text.scale)
        placed = _place_all(rng, required, optional, sides, image_size, keep_out, max_overlap, config)
        if placed is not None:
            break
    else:
        shape, colour = required[0]
        raise RuntimeError(
            f"Could not place {len(required)} {colour} {plural(shape)} in a {image_size}px scene; lower "
            "max_focus_count or min_object_fraction."
        )
    order = rng.permutation(len(placed))
    return SceneLayout(
        image_size=image_size,
        background=background,
        objects=tuple(placed[i] for i in order),
        text=text,
        focus=focus,
        max_overlap_fraction=max_overlap,
    )
