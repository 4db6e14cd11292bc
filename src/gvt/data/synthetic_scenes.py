"""GVTBench-style synthetic scenes as a `datasets.DatasetDict`, plus flat views for training and evaluation.

Each scene is a pure function of its integer `scene_seed` (and the `SyntheticSceneConfig`); a split's seeds are a
pure function of `(seed, split, index)`, so the same seed gives identical images and texts, and a split's first n
scenes do not depend on how many scenes the split has (nor on whether a shifted split is built).

The default config is the benchmark's training distribution: 60% count-focused scenes (0..8 objects of one
(shape, colour) kind plus up to 3 distractors) and 40% general mixes of 0..8 objects; light and dark (30%)
backgrounds, flat, gradient, noisy or textured; per-scene small, large or mixed object sizes; overlap allowed in
half of the scenes. The first count question of every scene has an answer uniform over 0..8 (the focus kind, or
all objects).

`build_synthetic_dataset(..., num_shifted=n)` adds a `"test_shifted"` split drawn from `config.shifted()`
(`SHIFTED_SCENE_CONFIG` for the default): the same vocabulary and questions, but every scene count-focused, 60%
dark and 60% textured backgrounds, only all-small or all-large scenes, and overlap in 80% of them. It has its own
seed stream, so it never shares a scene with the other splits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
import numpy as np
from PIL import Image
from transformers.utils import logging

from .scene_language import (
    TEXT_QUESTION,
    background_phrase,
    caption_for,
    count_questions_for,
    first_count_filter,
    presence_questions_for,
)
from .scene_layout import SceneLayout, SyntheticSceneConfig, sample_layout
from .scene_rendering import render_label_mask, render_scene_image

logger = logging.get_logger(__name__)

DEFAULT_IMAGE_SIZE = 112
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test", "test_shifted")
"""Split names, in seed-stream order (appending keeps the seeds of the earlier splits)."""
SHIFTED_SPLIT = "test_shifted"
SHIFTED_SCENE_CONFIG = SyntheticSceneConfig().shifted()
"""The scenes of the default `"test_shifted"` split (a distribution shift from training, same vocabulary)."""
SEED_WORDS = 2
"""A scene seed is two 32-bit words of the split's seed sequence (a 63-bit integer)."""
QA_KINDS: tuple[str, ...] = ("count", "presence", "text")

SYNTHETIC_SCENE_FEATURES = datasets.Features(
    {
        "scene_id": datasets.Value("string"),
        "scene_seed": datasets.Value("int64"),
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "objects": datasets.List(
            {
                "shape": datasets.Value("string"),
                "colour": datasets.Value("string"),
                "bbox": datasets.List(datasets.Value("int32"), length=4),
            }
        ),
        "count_questions": datasets.List(
            {
                "question": datasets.Value("string"),
                "answer": datasets.Value("int32"),
                "shape": datasets.Value("string"),
                "colour": datasets.Value("string"),
            }
        ),
        "presence_questions": datasets.List(
            {
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "shape": datasets.Value("string"),
                "colour": datasets.Value("string"),
            }
        ),
        "text": datasets.Value("string"),
        "text_bbox": datasets.List(datasets.Value("int32")),
        "background": datasets.Value("string"),
    }
)
"""Columns of `build_synthetic_dataset`. `bbox`/`text_bbox` are half-open (x0, y0, x1, y1); `text_bbox` is empty
when nothing is written."""

QA_FEATURES = datasets.Features(
    {
        "scene_id": datasets.Value("string"),
        "image": datasets.Image(),
        "prompt": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)


@dataclass
class SyntheticScene:
    """One generated scene: the image, its layout and everything said about it."""

    scene_seed: int
    image: Image.Image
    layout: SceneLayout
    caption: str
    count_questions: list[dict[str, Any]] = field(default_factory=list)
    presence_questions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self.layout.objects]

    @property
    def text(self) -> str:
        return self.layout.text.text if self.layout.text is not None else ""

    @property
    def text_bbox(self) -> list[int]:
        return list(self.layout.text.bbox) if self.layout.text is not None else []

    def label_mask(self) -> np.ndarray:
        """Class-id mask [size, size] aligned with `image` (see `render_label_mask`)."""
        return render_label_mask(self.layout.objects, self.layout.image_size, self.text_bbox or None)

    def to_example(self, scene_id: str) -> dict[str, Any]:
        """A row of `SYNTHETIC_SCENE_FEATURES`."""
        return {
            "scene_id": scene_id,
            "scene_seed": self.scene_seed,
            "image": self.image,
            "caption": self.caption,
            "objects": self.objects,
            "count_questions": self.count_questions,
            "presence_questions": self.presence_questions,
            "text": self.text,
            "text_bbox": self.text_bbox,
            "background": background_phrase(self.layout.background),
        }


def scene_seed_for(seed: int, split: str, index: int) -> int:
    """The scene seed of scene `index` of `split` (63-bit, from a `SeedSequence` keyed on all three)."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLIT_NAMES}.")
    words = np.random.SeedSequence([seed, SPLIT_NAMES.index(split), index]).generate_state(SEED_WORDS, np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) >> 1)


def generate_scene(
    scene_seed: int, image_size: int = DEFAULT_IMAGE_SIZE, config: SyntheticSceneConfig | None = None
) -> SyntheticScene:
    """Generate one scene from its seed (layout, appearance and wording use independent child streams)."""
    config = config or SyntheticSceneConfig()
    layout_rng, appearance_rng, language_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(scene_seed).spawn(3)
    )
    layout = sample_layout(layout_rng, image_size, config)
    image = render_scene_image(layout, appearance_rng, config.noise_std, config.colour_jitter)
    first = first_count_filter(layout.objects, layout.focus, language_rng)
    return SyntheticScene(
        scene_seed=scene_seed,
        image=image,
        layout=layout,
        caption=caption_for(layout.objects, layout.background, layout.text, language_rng),
        count_questions=count_questions_for(layout.objects, language_rng, config.num_count_questions, first),
        presence_questions=presence_questions_for(layout.objects, language_rng, config.max_presence_pairs),
    )


def _build_split(
    split: str, num_scenes: int, image_size: int, seed: int, config: SyntheticSceneConfig
) -> datasets.Dataset:
    rows = [
        generate_scene(scene_seed_for(seed, split, index), image_size, config).to_example(f"{split}-{index:06d}")
        for index in range(num_scenes)
    ]
    columns = {name: [row[name] for row in rows] for name in SYNTHETIC_SCENE_FEATURES}
    return datasets.Dataset.from_dict(columns, features=SYNTHETIC_SCENE_FEATURES, split=datasets.Split(split))


def build_synthetic_dataset(
    num_train: int,
    num_validation: int,
    num_test: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    config: SyntheticSceneConfig | None = None,
    num_shifted: int = 0,
) -> datasets.DatasetDict:
    """Train / validation / test splits of synthetic scenes (held in memory as PNG-encoded images), plus a
    `"test_shifted"` split of `num_shifted` scenes from `config.shifted()` when `num_shifted > 0`.

    Columns: see `SYNTHETIC_SCENE_FEATURES`. Splits never share a scene seed (asserted).
    """
    sizes = {"train": num_train, "validation": num_validation, "test": num_test, SHIFTED_SPLIT: num_shifted}
    for split, size in sizes.items():
        name = "num_shifted" if split == SHIFTED_SPLIT else f"num_{split}"
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {size!r}.")
    if not num_shifted:
        del sizes[SHIFTED_SPLIT]
    config = config or SyntheticSceneConfig()
    start = time.perf_counter()
    dataset = datasets.DatasetDict(
        {
            split: _build_split(split, size, image_size, seed, config.shifted() if split == SHIFTED_SPLIT else config)
            for split, size in sizes.items()
        }
    )
    seeds = [s for split in dataset for s in dataset[split]["scene_seed"]]
    if len(set(seeds)) != len(seeds):
        raise RuntimeError("Two synthetic scenes received the same scene seed; change `seed`.")
    logger.info(
        f"Built {sum(sizes.values())} synthetic scenes at {image_size}px in {time.perf_counter() - start:.1f}s."
    )
    return dataset


def to_caption_rows(dataset: datasets.Dataset | datasets.DatasetDict) -> datasets.Dataset | datasets.DatasetDict:
    """(image, text) rows for captioning: the scene's caption as `text`."""
    return dataset.select_columns(["image", "caption"]).rename_column("caption", "text")


def _qa_rows_batch(batch: dict[str, list], kind: str) -> dict[str, list]:
    rows: dict[str, list] = {"scene_id": [], "image": [], "prompt": [], "answer": []}
    for scene_id, image, count_qs, presence_qs, text in zip(
        batch["scene_id"], batch["image"], batch["count_questions"], batch["presence_questions"], batch["text"]
    ):
        if kind == "count":
            pairs = [(q["question"], str(q["answer"])) for q in count_qs]
        elif kind == "presence":
            pairs = [(q["question"], q["answer"]) for q in presence_qs]
        else:
            pairs = [(TEXT_QUESTION, text)] if text else []
        for prompt, answer in pairs:
            rows["scene_id"].append(scene_id)
            rows["image"].append(image)
            rows["prompt"].append(prompt)
            rows["answer"].append(answer)
    return rows


def to_qa_rows(
    dataset: datasets.Dataset | datasets.DatasetDict, kind: Literal["count", "presence", "text"] = "count"
) -> datasets.Dataset | datasets.DatasetDict:
    """One (scene_id, image, prompt, answer) row per question; answers are strings ("3", "yes", "A7").

    kind="count": GVT's object counting; "presence": multi-class identification; "text": read the drawn string
    (scenes without text give no row). Images are passed through encoded, never re-compressed.
    """
    if kind not in QA_KINDS:
        raise ValueError(f"kind must be one of {QA_KINDS}, got {kind!r}.")
    encoded = dataset.cast_column("image", datasets.Image(decode=False))
    first_split = encoded if isinstance(encoded, datasets.Dataset) else next(iter(encoded.values()))
    columns = first_split.column_names
    rows = encoded.map(
        _qa_rows_batch,
        batched=True,
        fn_kwargs={"kind": kind},
        desc=f"Flattening {kind} questions",
        remove_columns=columns,
        features=QA_FEATURES,
        load_from_cache_file=False,
    )
    return rows


def scene_texts(dataset: datasets.Dataset | datasets.DatasetDict) -> Iterator[str]:
    """Every caption, question and answer of a dataset (all splits), e.g. to train a text vocabulary."""
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    for split in splits:
        for row in split.select_columns(["caption", "count_questions", "presence_questions", "text"]):
            yield row["caption"]
            for question in row["count_questions"] + row["presence_questions"]:
                yield question["question"]
                yield str(question["answer"])
            if row["text"]:
                yield TEXT_QUESTION
                yield row["text"]
