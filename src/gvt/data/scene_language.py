"""Words about a scene: template captions, counting questions (GVT's OC) and presence questions (GVT's MCI)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .scene_layout import SceneBackground, SceneObject, SceneText
from .scene_vocabulary import OBJECT_COLOURS, SHAPE_NAMES, indefinite_article, number_word, plural

CAPTION_TEMPLATES: tuple[str, ...] = (
    "{objects} on {background}",
    "a picture of {objects} on {background}",
    "there {verb} {objects} on {background}",
    "{background} with {objects}",
    "an image showing {objects} over {background}",
)
EMPTY_CAPTION_TEMPLATES: tuple[str, ...] = (
    "an empty {background_name} background",
    "a plain {background_name} background with no shapes",
    "nothing but {background}",
)
TEXT_CLAUSE_TEMPLATES: tuple[str, ...] = (
    ' and the text "{text}"',
    ', with "{text}" written on it',
    ' and the characters "{text}"',
)
COUNT_QUESTION_TEMPLATES: tuple[str, ...] = (
    "How many {target} are there?",
    "How many {target} are in the image?",
    "How many {target} can you see?",
)
PRESENCE_QUESTION_TEMPLATES: tuple[str, ...] = (
    "Is there {article} {colour} {shape} in the image?",
    "Is there {article} {colour} {shape}?",
    "Can you see {article} {colour} {shape}?",
    "Does the image contain {article} {colour} {shape}?",
)
TEXT_QUESTION = "What is written in the image?"
OBJECT_NOUNS: tuple[str, ...] = ("shapes", "objects")
HARD_NEGATIVE_PROBABILITY = 0.5
"""Share of 'no' presence questions that reuse the shape or the colour of an object in the scene."""

PRESENT_FILTER_PROBABILITY = 0.75
"""Chance that a shape-only or colour-only counting question asks about a shape / colour in the scene."""

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((colour, shape) for shape in SHAPE_NAMES for colour in OBJECT_COLOURS)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def background_phrase(background: SceneBackground) -> str:
    """Noun phrase with its article: "a grey background", "a white to navy gradient background", "a striped maroon
    background", "a checked beige background"."""
    if background.kind == "gradient":
        name = f"{background.colour} to {background.end_colour} gradient"
    elif background.kind == "noisy":
        name = f"noisy {background.colour}"
    elif background.kind == "textured":
        name = f"{'checked' if background.pattern == 'checks' else 'striped'} {background.colour}"
    else:
        name = background.colour
    return f"{indefinite_article(name)} {name} background"


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption_for(
    objects: Sequence[SceneObject], background: SceneBackground, text: SceneText | None, rng: np.random.Generator
) -> str:
    """Template caption, e.g. 'three red circles and a blue square on a grey background'."""
    background_text = background_phrase(background)
    if not objects:
        caption = _pick(rng, EMPTY_CAPTION_TEMPLATES).format(
            background=background_text, background_name=background_text.split(" ", 1)[1].removesuffix(" background")
        )
    else:
        groups = Counter((o.colour, o.shape) for o in objects)  # insertion order = first appearance
        keys = list(groups)
        rng.shuffle(keys)
        phrases = [
            f"{indefinite_article(colour)} {colour} {shape}"
            if groups[(colour, shape)] == 1
            else f"{number_word(groups[(colour, shape)])} {colour} {plural(shape)}"
            for colour, shape in keys
        ]
        verb = "is" if groups[keys[0]] == 1 else "are"
        caption = _pick(rng, CAPTION_TEMPLATES).format(objects=_join(phrases), background=background_text, verb=verb)
    if text is not None:
        caption += _pick(rng, TEXT_CLAUSE_TEMPLATES).format(text=text.text)
    return caption


def count_matching(objects: Sequence[SceneObject], shape: str = "", colour: str = "") -> int:
    """Number of objects with this shape and colour ("" matches any)."""
    return sum((not shape or o.shape == shape) and (not colour or o.colour == colour) for o in objects)


def _count_target(shape: str, colour: str, rng: np.random.Generator) -> str:
    noun = plural(shape) if shape else _pick(rng, OBJECT_NOUNS)
    return f"{colour} {noun}" if colour else noun


def _count_question(
    objects: Sequence[SceneObject], shape: str, colour: str, rng: np.random.Generator
) -> dict[str, Any]:
    template = _pick(rng, COUNT_QUESTION_TEMPLATES)
    return {
        "question": template.format(target=_count_target(shape, colour, rng)),
        "answer": count_matching(objects, shape, colour),
        "shape": shape,
        "colour": colour,
    }


def focus_filter(objects: Sequence[SceneObject], focus: tuple[str, str], rng: np.random.Generator) -> tuple[str, str]:
    """(shape, colour) filter of a count-focused scene's first question: the focus pair, or with equal chance its
    shape alone or its colour alone when no other object shares that shape / colour (so the answer is the same)."""
    shape, colour = focus
    options = [(shape, colour)]
    if all(o.shape != shape or o.colour == colour for o in objects):
        options.append((shape, ""))
    if all(o.colour != colour or o.shape == shape for o in objects):
        options.append(("", colour))
    return _pick(rng, options)


def first_count_filter(
    objects: Sequence[SceneObject], focus: tuple[str, str] | None, rng: np.random.Generator
) -> tuple[str, str]:
    """(shape, colour) filter of a scene's first count question, whose answer is uniform over 0..8 across scenes:
    the focus kind of a count-focused scene (see `focus_filter`), else all objects (a general-mix scene holds
    0..max_objects objects, uniformly)."""
    return ("", "") if focus is None else focus_filter(objects, focus, rng)


def count_questions_for(
    objects: Sequence[SceneObject],
    rng: np.random.Generator,
    num_questions: int,
    first: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Distinct 'How many X?' questions with integer answers, covering pairs, shapes, colours and totals.

    Each question records the `shape` / `colour` filter it asks about ("" = any). The first is about the `first`
    (shape, colour) filter when given (see `first_count_filter`), then (or first) about a pair in the scene (if
    any); then, in random order, a shape, a colour, all objects and an absent pair (answer 0).
    """
    present = list(dict.fromkeys((o.colour, o.shape) for o in objects))
    absent = [pair for pair in ALL_PAIRS if pair not in present]
    present_shapes = [shape for _, shape in present] if present else list(SHAPE_NAMES)
    present_colours = [colour for colour, _ in present] if present else list(OBJECT_COLOURS)
    use_present = rng.random(2) < PRESENT_FILTER_PROBABILITY
    shape_filter = _pick(rng, present_shapes if use_present[0] else SHAPE_NAMES)
    colour_filter = _pick(rng, present_colours if use_present[1] else list(OBJECT_COLOURS))
    absent_colour, absent_shape = _pick(rng, absent)
    filters = [(shape_filter, ""), ("", colour_filter), ("", ""), (absent_shape, absent_colour)]
    filters = [filters[i] for i in rng.permutation(len(filters))]
    leading = [] if first is None else [first]
    if present:
        colour, shape = _pick(rng, present)
        leading.append((shape, colour))
    filters = leading + filters
    filters += [(shape, colour) for colour, shape in present]
    questions, seen = [], set()
    for shape, colour in filters:
        if (shape, colour) in seen:
            continue
        seen.add((shape, colour))
        questions.append(_count_question(objects, shape, colour, rng))
        if len(questions) == num_questions:
            break
    return questions


def _presence_question(colour: str, shape: str, answer: str, rng: np.random.Generator) -> dict[str, Any]:
    template = _pick(rng, PRESENCE_QUESTION_TEMPLATES)
    question = template.format(article=indefinite_article(colour), colour=colour, shape=shape)
    return {"question": question, "answer": answer, "shape": shape, "colour": colour}


def presence_questions_for(
    objects: Sequence[SceneObject], rng: np.random.Generator, max_pairs: int
) -> list[dict[str, Any]]:
    """Balanced 'Is there a <colour> <shape>?' questions: k 'yes' and k 'no' (k <= max_pairs), shuffled.

    An empty scene gets a single 'no'. Half the 'no' questions (when possible) are hard negatives that share a
    shape or a colour with something in the scene.
    """
    present = list(dict.fromkeys((o.colour, o.shape) for o in objects))
    absent = [pair for pair in ALL_PAIRS if pair not in present]
    present_colours = {colour for colour, _ in present}
    present_shapes = {shape for _, shape in present}
    hard_absent = [pair for pair in absent if pair[0] in present_colours or pair[1] in present_shapes]
    num_yes = min(len(present), max_pairs)
    num_no = max(num_yes, 1)

    order = rng.permutation(len(present))[:num_yes]
    questions = [_presence_question(*present[i], "yes", rng) for i in order]
    chosen: list[tuple[str, str]] = []
    for _ in range(num_no):
        use_hard = rng.random() < HARD_NEGATIVE_PROBABILITY
        pool = [p for p in (hard_absent if use_hard and hard_absent else absent) if p not in chosen]
        if not pool:
            pool = [p for p in absent if p not in chosen]
        chosen.append(_pick(rng, pool))
    questions += [_presence_question(colour, shape, "no", rng) for colour, shape in chosen]
    return [questions[i] for i in rng.permutation(len(questions))]


def binding_questions_for(
    objects: Sequence[SceneObject], rng: np.random.Generator, num_questions: int
) -> list[dict[str, Any]]:
    """Extra *training* questions that can only be answered by binding colour to shape: about pairs that share the
    colour or the shape of an object in the scene, half of them absent ("no" / 0), half present.

    Each is a presence question ("Is there a red square?") or a counting question ("How many red squares are
    there?") with equal chance; rows look like `count_questions_for` / `presence_questions_for` rows plus a `kind`
    ("count" or "presence"). The evaluation splits never use these: a model trained on the generator's own mix can
    learn the shortcut "the colour is there, so yes", which these questions take away."""
    present = list(dict.fromkeys((o.colour, o.shape) for o in objects))
    if not present:
        return []
    colours = {colour for colour, _ in present}
    shapes = {shape for _, shape in present}
    sharing = [pair for pair in ALL_PAIRS if pair not in present and (pair[0] in colours or pair[1] in shapes)]
    questions = []
    for index in range(num_questions):
        pool = sharing if index % 2 == 0 and sharing else present
        colour, shape = _pick(rng, pool)
        if rng.random() < 0.5:
            answer = "yes" if (colour, shape) in present else "no"
            questions.append({**_presence_question(colour, shape, answer, rng), "kind": "presence"})
        else:
            questions.append({**_count_question(objects, shape, colour, rng), "kind": "count"})
    return questions
