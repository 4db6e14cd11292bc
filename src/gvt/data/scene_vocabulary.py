"""The closed vocabulary of the synthetic scenes: shapes, colours, backgrounds, number words, patch class ids."""

from __future__ import annotations

import math
from collections.abc import Sequence

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
"""Shape classes, in class-id order."""

SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "cross": "crosses",
}

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 220),
    "yellow": (245, 205, 20),
    "orange": (250, 125, 15),
    "purple": (135, 45, 180),
    "cyan": (20, 190, 205),
    "black": (25, 25, 25),
}
"""Saturated object colours (RGB), in class-id order. Not every colour shows on every background: the generator
only draws the ones at least `min_object_contrast` away from it (`visible_object_colours`)."""

LIGHT_BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (196, 196, 196),
    "beige": (232, 222, 196),
    "pale blue": (198, 218, 240),
    "pale green": (206, 234, 204),
    "pale pink": (242, 214, 222),
}
DARK_BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "navy": (25, 35, 80),
    "dark grey": (60, 60, 64),
    "dark green": (20, 60, 35),
    "maroon": (80, 25, 35),
    "brown": (90, 60, 35),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {**LIGHT_BACKGROUND_COLOURS, **DARK_BACKGROUND_COLOURS}
"""Background colours (RGB), pale ones first, then dark ones."""

BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noisy", "textured")
"""Flat colour, two-colour linear gradient, flat colour under pixel noise, stripes or checks of two close shades."""

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)

TEXT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Characters of the drawn strings (no I or O, which the bitmap font draws like 1 and 0)."""

DARK_LUMINANCE = 128.0
"""Below this luminance a background counts as dark (light text ink, black objects hidden)."""

BACKGROUND_CLASS_ID = 0
TEXT_CLASS_ID = 1 + len(SHAPE_NAMES) * len(OBJECT_COLOURS)
NUM_PATCH_CLASSES = TEXT_CLASS_ID + 1


def colour_distance(colour: Sequence[float], other: Sequence[float]) -> float:
    """Euclidean RGB distance."""
    return math.dist(colour, other)


def luminance(colour: Sequence[float]) -> float:
    """Relative brightness 0..255 (Rec. 601 weights)."""
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def is_dark_colour(name: str) -> bool:
    """Whether a background colour needs light text ink."""
    return luminance(BACKGROUND_COLOURS[name]) < DARK_LUMINANCE


def object_class_id(shape: str, colour: str) -> int:
    """Patch class id of a (shape, colour) pair: 1 + shape_index * num_colours + colour_index."""
    if shape not in SHAPE_NAMES:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPE_NAMES}.")
    if colour not in OBJECT_COLOURS:
        raise ValueError(f"Unknown colour {colour!r}; expected one of {tuple(OBJECT_COLOURS)}.")
    return 1 + SHAPE_NAMES.index(shape) * len(OBJECT_COLOURS) + list(OBJECT_COLOURS).index(colour)


def patch_class_names() -> list[str]:
    """Names of the patch classes, indexed by class id ("background", "red circle", ..., "text")."""
    names = ["background"]
    names += [f"{colour} {shape}" for shape in SHAPE_NAMES for colour in OBJECT_COLOURS]
    names.append("text")
    return names


def number_word(number: int) -> str:
    """English word for 0..10 ("zero" .. "ten"); digits beyond."""
    return NUMBER_WORDS[number] if 0 <= number < len(NUMBER_WORDS) else str(number)


def indefinite_article(word: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if word[:1] in "aeio" else "a"


def plural(shape: str) -> str:
    """Plural of a shape name."""
    return SHAPE_PLURALS[shape]
