"""The closed vocabulary of the synthetic scenes: shapes, colours, backgrounds, number words, patch class ids."""

from __future__ import annotations

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
"""Saturated object colours (RGB), in class-id order; all contrast with every background colour."""

BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (196, 196, 196),
    "beige": (232, 222, 196),
    "pale blue": (198, 218, 240),
    "pale green": (206, 234, 204),
    "pale pink": (242, 214, 222),
}
"""Pale background colours (RGB)."""

BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noisy")

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

BACKGROUND_CLASS_ID = 0
TEXT_CLASS_ID = 1 + len(SHAPE_NAMES) * len(OBJECT_COLOURS)
NUM_PATCH_CLASSES = TEXT_CLASS_ID + 1


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
