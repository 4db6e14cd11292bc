"""Judge a LaVIT model off its own training generator: object counting (OC) and multi-class identification (MCI) on
scenes drawn by an independent generator (own layout sampler and renderer; only the words come from `gvt.data`).

    python benchmarks/independent_scenes.py [--model FOLDER] [--scenes 300] [--seed 0] [--backgrounds light,dark]
                                            [--json out.json]

Each scene holds 0-8 objects of one asked kind (a colour and a shape among circle / square / triangle; the true
count runs evenly over 0..8) and up to 3 distractors of other kinds, axis-aligned and never overlapping, drawn 4x
supersampled at the processor's image size on a "light" (pale, near white) or a "dark" (navy, dark grey, dark green,
maroon) background; no object colour is within `MIN_CONTRAST` (RGB distance) of its background. Each scene asks one
counting question about the asked kind and two presence questions: one "yes" about a pair in the scene and one
"no" about an absent pair sharing a colour or a shape with the scene (when there is one). Answers are greedy
(`gvt.default_model.evaluation.generate_answers`) and scored by the packaged `evaluate` metrics. Prints per
background family: OC accuracy / MAE, MCI accuracy (yes / no), the share of answers off the trained format; OC
accuracy, mean answer (under / over-counting) and off-format share per true count; OC / MCI per background colour;
then each family's headline metrics as a ratio to the first family's.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gvt.data.scene_language import COUNT_QUESTION_TEMPLATES, PRESENCE_QUESTION_TEMPLATES
from gvt.data.scene_vocabulary import NUMBER_WORDS, OBJECT_COLOURS, indefinite_article, plural

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MAX_COUNT = 8
MAX_DISTRACTORS = 3
REFERENCE_IMAGE_SIZE = 112
SIDE_RANGE = (14, 34)
"""Object sides in pixels at `REFERENCE_IMAGE_SIZE` (scaled with the image size)."""
FILL_FRACTION = 0.3
"""Largest share of the image the objects' boxes may cover; crowded scenes get smaller objects."""
GAP = 3
"""Pixels kept free between two objects' boxes and between a box and the border (at the reference size)."""
SUPERSAMPLE = 4
COLOUR_JITTER = 16
"""Per-object, per-channel uniform jitter of the vocabulary RGB."""
BACKGROUND_JITTER = 8
BACKGROUND_NOISE = 2.0
MIN_CONTRAST = 90.0
"""Smallest RGB distance between an object's colour and its background."""
PLACEMENT_TRIES = 200
ANSWER_MAX_NEW_TOKENS = 4

BACKGROUNDS: dict[str, dict[str, tuple[int, int, int]]] = {
    "light": {
        "white": (248, 248, 246),
        "pale grey": (232, 232, 230),
        "pale blue": (226, 236, 248),
        "cream": (248, 243, 226),
        "pale green": (228, 244, 230),
        "pale pink": (248, 230, 236),
    },
    "dark": {
        "navy": (24, 34, 78),
        "dark grey": (52, 52, 54),
        "dark green": (22, 62, 36),
        "maroon": (96, 24, 34),
    },
}
"""Background colours of each family (RGB, before a per-scene jitter)."""

Box = tuple[int, int, int, int]
"""`(x0, y0, x1, y1)` in pixels, x1 / y1 exclusive."""


@dataclass(frozen=True)
class PlacedObject:
    colour: str
    shape: str
    rgb: tuple[int, int, int]
    box: Box


@dataclass
class IndependentScene:
    """One scene: its image, what is in it, and its questions with their true answers."""

    image: Image.Image
    family: str
    background: str
    background_rgb: tuple[int, int, int]
    objects: list[PlacedObject]
    asked: tuple[str, str]
    """The `(colour, shape)` the counting question asks about."""
    count_question: str
    count_answer: int
    presence: list[tuple[str, str]] = field(default_factory=list)
    """`(question, "yes" | "no")` pairs."""


def contrast(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean RGB distance."""
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def visible_colours(background_rgb: Sequence[float]) -> list[str]:
    """Vocabulary colours far enough from the background (black never on dark backgrounds)."""
    return [name for name, rgb in OBJECT_COLOURS.items() if contrast(rgb, background_rgb) >= MIN_CONTRAST]


def jittered_colour(colour: str, background_rgb: Sequence[float], rng: np.random.Generator) -> tuple[int, int, int]:
    """The vocabulary RGB of `colour` moved by up to `COLOUR_JITTER` per channel; the plain RGB when the jitter would
    bring it within `MIN_CONTRAST` of the background."""
    base = np.array(OBJECT_COLOURS[colour])
    rgb = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
    if contrast(rgb, background_rgb) < MIN_CONTRAST:
        rgb = base
    red, green, blue = (int(v) for v in rgb)
    return red, green, blue


def boxes_overlap(a: Box, b: Box, gap: int = 0) -> bool:
    """Whether two boxes come closer than `gap` pixels."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def place_boxes(num_objects: int, image_size: int, rng: np.random.Generator) -> list[Box]:
    """`num_objects` square boxes that keep `GAP` from each other and from the border, sides in `SIDE_RANGE` (scaled)
    and capped so that together they cover at most `FILL_FRACTION` of the image; largest first, rejection sampled,
    shrinking every side by 10% after a failed attempt."""
    scale = image_size / REFERENCE_IMAGE_SIZE
    low, high = SIDE_RANGE[0] * scale, SIDE_RANGE[1] * scale
    gap = max(1, round(GAP * scale))
    if num_objects:
        high = max(low, min(high, np.sqrt(FILL_FRACTION * image_size**2 / num_objects)))
    sides = np.sort(rng.uniform(low, high, num_objects))[::-1]
    for _ in range(20):
        boxes: list[Box] = []
        for side in np.maximum(np.round(sides).astype(int), 4):
            for _ in range(PLACEMENT_TRIES):
                x0, y0 = rng.integers(gap, image_size - gap - side + 1, 2)
                box = (int(x0), int(y0), int(x0 + side), int(y0 + side))
                if not any(boxes_overlap(box, other, gap) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == num_objects:
            return boxes
        sides = sides * 0.9
    raise RuntimeError(f"Could not place {num_objects} objects on a {image_size}px image.")


def shape_outline(shape: str, box: Box, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Polygon of a square or an upright triangle (its height 80-100% of its base) in `box` (inclusive corners)."""
    x0, y0, x1, y1 = box
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    height = (y1 - y0) * rng.uniform(0.8, 1.0)
    top = y1 - height
    return [((x0 + x1) / 2, top), (x1, y1), (x0, y1)]


def render(
    objects: Sequence[PlacedObject], background_rgb: Sequence[int], image_size: int, rng: np.random.Generator
) -> Image.Image:
    """Draw the objects at `SUPERSAMPLE`x, box-filter down (anti-aliased edges), add faint background noise."""
    big = Image.new("RGB", (image_size * SUPERSAMPLE,) * 2, tuple(background_rgb))
    draw = ImageDraw.Draw(big)
    for obj in objects:
        x0, y0, x1, y1 = (v * SUPERSAMPLE for v in obj.box)
        box = (x0, y0, x1 - 1, y1 - 1)  # PIL's corners are inclusive
        if obj.shape == "circle":
            draw.ellipse(box, fill=obj.rgb)
        else:
            draw.polygon(shape_outline(obj.shape, box, rng), fill=obj.rgb)
    pixels = np.asarray(big.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.float32)
    pixels = pixels + rng.normal(0.0, BACKGROUND_NOISE, pixels.shape)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def presence_question(colour: str, shape: str, rng: np.random.Generator) -> str:
    """'Is there a red circle?' in one of the model's own wordings."""
    return _pick(rng, PRESENCE_QUESTION_TEMPLATES).format(
        article=indefinite_article(colour), colour=colour, shape=shape
    )


def generate_scene(family: str, count: int, image_size: int, rng: np.random.Generator) -> IndependentScene:
    """A scene of `family` ("light" or "dark") holding `count` objects of the asked kind among 0-3 distractors."""
    if family not in BACKGROUNDS:
        raise ValueError(f"Unknown background family {family!r}; expected one of {tuple(BACKGROUNDS)}.")
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 0..{MAX_COUNT}, got {count}.")
    background = _pick(rng, list(BACKGROUNDS[family]))
    jitter = rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, 3)
    red, green, blue = (int(v) for v in np.clip(np.add(BACKGROUNDS[family][background], jitter), 0, 255))
    background_rgb = (red, green, blue)
    pairs = [(colour, shape) for colour in visible_colours(background_rgb) for shape in SHAPES]
    asked = _pick(rng, pairs)
    others = [pair for pair in pairs if pair != asked]
    kinds = [asked] * count + [_pick(rng, others) for _ in range(int(rng.integers(MAX_DISTRACTORS + 1)))]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    boxes = place_boxes(len(kinds), image_size, rng)
    objects = [
        PlacedObject(colour, shape, jittered_colour(colour, background_rgb, rng), box)
        for (colour, shape), box in zip(kinds, boxes)
    ]
    image = render(objects, background_rgb, image_size, rng)

    count_question = _pick(rng, COUNT_QUESTION_TEMPLATES).format(target=f"{asked[0]} {plural(asked[1])}")
    present = list(dict.fromkeys(kinds))
    absent = [pair for pair in pairs if pair not in present]
    sharing = [p for p in absent if any(p[0] == c or p[1] == s for c, s in present)]
    questions = [(presence_question(*_pick(rng, present), rng), "yes")] if present else []
    no_pairs = sharing or absent
    for index in rng.permutation(len(no_pairs))[: 2 - len(questions)]:  # an empty scene gets two "no"
        questions.append((presence_question(*no_pairs[index], rng), "no"))
    return IndependentScene(
        image, family, background, background_rgb, objects, asked, count_question, count, questions
    )


def generate_scenes(family: str, num_scenes: int, image_size: int, seed: int) -> list[IndependentScene]:
    """`num_scenes` scenes whose true counts cycle through 0..8; scene `i` depends only on (seed, family, i)."""
    if family not in BACKGROUNDS:
        raise ValueError(f"Unknown background family {family!r}; expected one of {tuple(BACKGROUNDS)}.")
    family_index = list(BACKGROUNDS).index(family)
    return [
        generate_scene(family, index % (MAX_COUNT + 1), image_size, np.random.default_rng([seed, family_index, index]))
        for index in range(num_scenes)
    ]


def load_model(folder: str | os.PathLike | None = None):
    """Model (float32, eval) and processor of a repo folder (default: the shipped default) through the Auto classes,
    from local files only."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import gvt  # noqa: F401  (registers the Auto classes)
    from gvt.default_model import check_model_dir

    path = check_model_dir(folder)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
    return model, AutoProcessor.from_pretrained(path, local_files_only=True)


def is_count_word(answer: str) -> bool:
    """Whether an answer is a bare count ("3", "three"), as the model was trained to answer."""
    word = answer.strip().lower().rstrip(".")
    return word.isdigit() or word in NUMBER_WORDS


def evaluate_scenes(model, processor, scenes: Sequence[IndependentScene], batch_size: int = 64) -> dict[str, Any]:
    """OC accuracy / MAE, MCI accuracy (all, yes, no), the share of answers off the trained format (not a bare count,
    not yes / no); per true count: OC accuracy, n, mean parsed answer and off-format share; per background colour:
    n, OC and MCI accuracy."""
    from gvt.default_model.evaluation import generate_answers
    from gvt.metrics import load_metric

    images = [scene.image for scene in scenes]
    count_answers = generate_answers(
        model, processor, images, [s.count_question for s in scenes], ANSWER_MAX_NEW_TOKENS, batch_size
    )
    presence = [(index, *pair) for index, scene in enumerate(scenes) for pair in scene.presence]
    presence_answers = generate_answers(
        model, processor, [images[i] for i, _, _ in presence], [q for _, q, _ in presence], ANSWER_MAX_NEW_TOKENS,
        batch_size,
    )  # fmt: skip
    counting, identification = load_metric("object_counting"), load_metric("multiclass_identification")
    truths = np.array([scene.count_answer for scene in scenes])
    oc_off_format = np.array([not is_count_word(answer) for answer in count_answers])
    oc = counting.compute(predictions=count_answers, references=truths.tolist())
    references = np.array([answer for _, _, answer in presence])
    question_scene = np.array([index for index, _, _ in presence], dtype=int)

    def mci_accuracy(chosen: np.ndarray) -> float | None:
        if not chosen.any():
            return None
        answers = [answer for answer, keep in zip(presence_answers, chosen) if keep]
        return float(identification.compute(predictions=answers, references=references[chosen].tolist())["accuracy"])

    per_count = []
    for count in range(MAX_COUNT + 1):
        cell = truths == count
        per_count.append(
            {
                "count": count,
                "n": int(cell.sum()),
                "accuracy": oc["accuracy_by_count"].get(str(count)),
                "mean_answer": oc["mean_count_by_count"].get(str(count)),
                "off_format": float(oc_off_format[cell].mean()) if cell.any() else None,
            }
        )
    names = np.array([scene.background for scene in scenes])
    per_background = [
        {
            "background": name,
            "n": int((names == name).sum()),
            "oc_accuracy": float(
                counting.compute(
                    predictions=[a for a, keep in zip(count_answers, names == name) if keep],
                    references=truths[names == name].tolist(),
                )["accuracy"]
            ),
            "mci_accuracy": mci_accuracy((names == name)[question_scene]),
            "oc_off_format": float(oc_off_format[names == name].mean()),
        }
        for name in BACKGROUNDS[scenes[0].family]
        if (names == name).any()
    ]
    return {
        "num_scenes": len(scenes),
        "oc_accuracy": float(oc["accuracy"]),
        "oc_mae": float(oc["mae"]),
        "mci_accuracy": mci_accuracy(np.ones(len(references), dtype=bool)),
        "mci_yes_accuracy": mci_accuracy(references == "yes"),
        "mci_no_accuracy": mci_accuracy(references == "no"),
        "oc_off_format": float(oc_off_format.mean()),
        "mci_off_format": float(np.mean([a.strip().lower() not in ("yes", "no") for a in presence_answers])),
        "num_questions": {"oc": len(count_answers), "mci": len(presence_answers)},
        "per_count": per_count,
        "per_background": per_background,
        "examples": [
            {"question": s.count_question, "answer": a, "reference": s.count_answer}
            for s, a in list(zip(scenes, count_answers))[:3]
        ],
    }


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(family: str, results: dict[str, Any]) -> str:
    """Markdown summary, per-count and per-background-colour tables of one background family."""
    lines = [
        f"### {family} backgrounds: {results['num_scenes']} scenes, {results['num_questions']['oc']} OC / "
        f"{results['num_questions']['mci']} MCI questions",
        "",
        "| OC accuracy | OC MAE | MCI accuracy | MCI yes | MCI no | OC off-format | MCI off-format |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {_fmt(results['oc_accuracy'])} | {_fmt(results['oc_mae'], '.2f')} | {_fmt(results['mci_accuracy'])} "
        f"| {_fmt(results['mci_yes_accuracy'])} | {_fmt(results['mci_no_accuracy'])} "
        f"| {_fmt(results['oc_off_format'], '.1%')} | {_fmt(results['mci_off_format'], '.1%')} |",
        "",
        "| true count | OC accuracy (n) | mean answer | off-format |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['count']} | {_fmt(c['accuracy'], '.2f')} ({c['n']}) | {_fmt(c['mean_answer'], '.2f')} "
        f"| {_fmt(c['off_format'], '.0%')} |"
        for c in results["per_count"]
    ]
    lines += [
        "",
        "| background | scenes | OC accuracy | MCI accuracy | OC off-format |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {b['background']} | {b['n']} | {_fmt(b['oc_accuracy'])} | {_fmt(b['mci_accuracy'])} "
        f"| {_fmt(b['oc_off_format'], '.0%')} |"
        for b in results["per_background"]
    ]
    return "\n".join(lines)


HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("oc_accuracy", "OC accuracy"),
    ("oc_mae", "OC MAE"),
    ("mci_accuracy", "MCI accuracy"),
)


def format_comparison(families: dict[str, dict[str, Any]]) -> str:
    """Headline metrics of every family with their ratio to the first family's (same model, same run)."""
    names = list(families)
    baseline = families[names[0]]
    lines = [
        f"### families against {names[0]} (ratio to {names[0]})",
        "",
        "| family | " + " | ".join(title for _, title in HEADLINE_METRICS) + " |",
        "| --- |" + " --- |" * len(HEADLINE_METRICS),
    ]
    for name in names:
        cells = []
        for key, _ in HEADLINE_METRICS:
            value, base = families[name][key], baseline[key]
            ratio = f"{value / base:.2f}x" if value is not None and base else "-"
            cells.append(f"{_fmt(value)} ({ratio})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a LaVIT repo folder (default: the embedded default)")
    parser.add_argument("--scenes", type=int, default=300, help="scenes per background family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backgrounds", default="light,dark", help=f"comma-separated, from {','.join(BACKGROUNDS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.backgrounds.split(",") if name.strip()]
    unknown = [name for name in families if name not in BACKGROUNDS]
    if unknown or not families:
        parser.error(f"--backgrounds takes names from {tuple(BACKGROUNDS)}, got {args.backgrounds!r}.")
    if args.scenes < 1:
        parser.error(f"--scenes must be positive, got {args.scenes}.")

    import torch

    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    image_size = int(processor.image_processor.size["height"])
    results: dict[str, Any] = {"model": str(args.model or "shipped default"), "seed": args.seed, "families": {}}
    for family in families:
        scenes = generate_scenes(family, args.scenes, image_size, args.seed)
        results["families"][family] = evaluate_scenes(model, processor, scenes, args.batch_size)
        print(format_table(family, results["families"][family]) + "\n", flush=True)
    if len(families) > 1:
        print(format_comparison(results["families"]) + "\n")
    if args.json:
        from gvt.atomic_write import write_text_atomically

        write_text_atomically(Path(args.json), json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
