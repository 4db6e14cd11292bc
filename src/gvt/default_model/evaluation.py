"""GVTBench on the synthetic scenes: captioning, object counting (OC) and multi-class identification (MCI) with a
LaVIT model and its processor, scored by the packaged `evaluate` modules (`gvt.metrics`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..metrics import load_metric

CAPTION_MAX_NEW_TOKENS = 48
ANSWER_MAX_NEW_TOKENS = 4


@dataclass
class GVTBenchItems:
    """What is asked about a set of scenes: `(image index, prompt, reference)` per task; `images` are PIL."""

    images: list[Any] = field(default_factory=list)
    captions: list[tuple[int, str, str]] = field(default_factory=list)
    counts: list[tuple[int, str, int]] = field(default_factory=list)
    presence: list[tuple[int, str, str]] = field(default_factory=list)


def gvtbench_items(split, num_scenes: int | None = None) -> GVTBenchItems:
    """Captions, counting and presence questions of the first `num_scenes` scenes of a `build_synthetic_dataset`
    split (all scenes when None)."""
    if num_scenes is not None:
        split = split.select(range(min(num_scenes, len(split))))
    items = GVTBenchItems()
    for index, row in enumerate(split):
        items.images.append(row["image"].convert("RGB"))
        items.captions.append((index, "", row["caption"]))
        items.counts += [(index, q["question"], int(q["answer"])) for q in row["count_questions"]]
        items.presence += [(index, q["question"], q["answer"]) for q in row["presence_questions"]]
    return items


def presence_kind(question: dict, objects: list[dict]) -> str:
    """Kind of an MCI question about a scene: "yes", or "no" whose pair shares the colour, the shape, both (with
    different objects) or nothing with the scene. A model that ignores the shape word fails "no, colour present"."""
    if question["answer"] == "yes":
        return "yes"
    shared = (question["colour"] in {o["colour"] for o in objects}, question["shape"] in {o["shape"] for o in objects})
    return {
        (True, True): "no, colour and shape present",
        (True, False): "no, colour present",
        (False, True): "no, shape present",
        (False, False): "no, neither present",
    }[shared]


@torch.no_grad()
def generate_answers(
    model,
    processor,
    images: list[Any],
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 64,
    description: str | None = None,
    progress_bar: bool = True,
) -> list[str]:
    """Greedy answers of `model` to `(image, prompt)` pairs, in batches (left padding)."""
    answers: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=description, disable=not progress_bar or description is None, leave=False):
        batch_images = images[start : start + batch_size]
        batch_prompts = prompts[start : start + batch_size]
        inputs = processor(images=batch_images, text=batch_prompts, return_tensors="pt", padding=True)
        inputs = model.expand_image_tokens(**inputs)  # generate returns the expanded prompt, then the answer
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        answers += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers


@torch.no_grad()
def mean_visual_tokens(model, processor, images: list[Any], batch_size: int = 64) -> float:
    """Mean number of visual tokens the model's tokenizer gives an image."""
    total = 0
    for start in range(0, len(images), batch_size):
        pixels = processor.image_processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        total += int(model.vision_tokenizer.tokenize(pixels.to(model.dtype)).attention_mask.sum())
    return total / max(len(images), 1)


def evaluate_gvtbench(
    model, processor, split, num_scenes: int | None = None, batch_size: int = 64, progress_bar: bool = True
) -> dict[str, Any]:
    """OC accuracy / MAE / RMSE (overall and per true count), MCI accuracy, caption BLEU-4 / CIDEr and mean visual tokens on the first
    `num_scenes` scenes of `split`; `examples` holds a few (question, answer, reference) triples per task."""
    start = time.perf_counter()
    model.eval()
    items = gvtbench_items(split, num_scenes)
    results: dict[str, Any] = {"num_scenes": len(items.images)}

    def run(task, max_new_tokens, description):
        images = [items.images[index] for index, _, _ in task]
        prompts = [prompt for _, prompt, _ in task]
        return generate_answers(
            model, processor, images, prompts, max_new_tokens, batch_size, description, progress_bar
        )

    count_answers = run(items.counts, ANSWER_MAX_NEW_TOKENS, "object counting")
    oc = load_metric("object_counting").compute(
        predictions=count_answers, references=[reference for _, _, reference in items.counts]
    )
    presence_answers = run(items.presence, ANSWER_MAX_NEW_TOKENS, "multi-class identification")
    mci = load_metric("multiclass_identification").compute(
        predictions=presence_answers, references=[reference for _, _, reference in items.presence]
    )
    captions = run(items.captions, CAPTION_MAX_NEW_TOKENS, "captioning")
    caption_scores = load_metric("caption").compute(
        predictions=captions, references=[reference for _, _, reference in items.captions]
    )
    results.update(
        oc_accuracy=float(oc["accuracy"]),
        oc_mae=float(oc["mae"]),
        oc_rmse=float(oc["rmse"]),
        oc_accuracy_by_count=oc["accuracy_by_count"],
        oc_mean_answer_by_count=oc["mean_count_by_count"],
        oc_questions_by_count=oc["support_by_count"],
        mci_accuracy=float(mci["accuracy"]),
        caption_cider=float(caption_scores["cider"]),
        caption_bleu=float(caption_scores.get("bleu", caption_scores.get("bleu_4", 0.0))),
        mean_visual_tokens=mean_visual_tokens(model, processor, items.images, batch_size),
        num_questions={"oc": len(items.counts), "mci": len(items.presence), "caption": len(items.captions)},
    )
    results["examples"] = {
        "caption": [(p, a, r) for (_, p, r), a in list(zip(items.captions, captions))[:3]],
        "oc": [(p, a, r) for (_, p, r), a in list(zip(items.counts, count_answers))[:3]],
        "mci": [(p, a, r) for (_, p, r), a in list(zip(items.presence, presence_answers))[:3]],
    }
    results["seconds"] = time.perf_counter() - start
    return results


__all__ = ["GVTBenchItems", "gvtbench_items", "generate_answers", "mean_visual_tokens", "evaluate_gvtbench"]
