"""Which learning rate lets the embedded default's language model bind colour to shape.

    python benchmarks/default_model_llm_sweep.py [--steps 3000] [--learning-rates 2e-3 1e-3] [--test-scenes 300]

Trains stage C of the recipe (`gvt.default_model.train_default`: the language model from scratch on the frozen
visual ids of the shipped tokenizer, or `--model`'s, with the recipe's captions, counting, presence and binding
questions) once per learning rate, with the same seed, data and number of steps, and prints OC and MCI accuracy on
the test split and MCI by kind of question, with ratios against the first rate (the baseline). MCI hinges on "no, colour present": a
model that reads the colour word of "Is there a red circle?" but not the shape word answers "yes" there.

Measured on one thread (about 5 min per 3000 steps), as MCI / accuracy of the "no" answers about a colour that is
in the scene. With the stage-B tokenizer of the recipe (`--model` on the previous default, commit 00534df, whose
stages A and B are the same): at 1500 steps 2e-3 gives 0.774 / 0.18, 1e-3 0.815 / 0.09 and 4e-3 0.52; at 3000 steps
1e-3 gives 0.904 / 0.64 (0.898 / 0.62 from another initialisation), as in the shipped recipe. With the shipped
(ETT-tuned) tokenizer's codes, 3000 steps stay in the colour-only shortcut at both rates (MCI 0.813 at 2e-3, 0.815
at 1e-3; OC 0.570 / 0.643). Full recipe runs at 2e-3 (4000 or 5000 steps), at 1e-3 with 4000 or 5000 steps and
with seed 1 stayed in it too (MCI 0.81): leaving the shortcut is a sharp transition that depends on the schedule
and on the exact codes, not a gradual gain.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from gvt.data import SyntheticSceneConfig, build_synthetic_dataset
from gvt.default_model import load_default
from gvt.default_model.evaluation import generate_answers, presence_kind
from gvt.default_model.train_default import (
    RecipeConfig,
    SequenceBuilder,
    SequenceCollator,
    SequenceDataset,
    build_model,
    pixel_tensor,
    qa_pairs,
    run_trainer,
    seed_everything,
    set_trainable,
    tokenize_pixels,
)
from gvt.metrics import load_metric

KINDS = ("yes", "no, colour present", "no, shape present", "no, colour and shape present", "no, neither present")


def train_language_model(recipe: RecipeConfig, default, rows, learning_rate: float, steps: int):
    """A fresh recipe LLM with the default's vision tokenizer, trained `steps` steps on the id rows."""
    seed_everything(recipe.seed)
    model = build_model(recipe, default.processor.tokenizer, "ids")
    state = default.model.vision_tokenizer.state_dict()
    # the output projection feeds the codebook branch only; its width follows the language model's
    state = {key: value for key, value in state.items() if not key.startswith("projection.")}
    missing, unexpected = model.vision_tokenizer.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("projection.") for key in missing):
        raise ValueError(f"the default's vision tokenizer does not fit the recipe: {missing=} {unexpected=}")
    model.generation_config = default.model.generation_config
    set_trainable(model, language_model=True, projector=False, tokenizer=False)
    model.train()
    with tempfile.TemporaryDirectory() as scratch:
        collator = SequenceCollator(default.processor.tokenizer.pad_token_id)
        run_trainer(
            model, SequenceDataset(rows), collator, recipe, Path(scratch), steps, learning_rate,
            warmup_steps=max(1, steps // 20),
        )  # fmt: skip
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--learning-rates", type=float, nargs="+", default=[2e-3, 1e-3], help="the first is the baseline"
    )
    parser.add_argument("--steps", type=int, default=RecipeConfig.llm_steps, help="default: the recipe's")
    parser.add_argument("--train-scenes", type=int, default=RecipeConfig.num_train)
    parser.add_argument("--test-scenes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="take the vision tokenizer from this LaVIT repo folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = RecipeConfig(num_train=args.train_scenes)
    default = load_default(args.model, with_decoder=False)
    data = build_synthetic_dataset(
        recipe.num_train, 0, args.test_scenes, recipe.image_size, recipe.seed, SyntheticSceneConfig()
    )
    pixels = pixel_tensor(default.processor, [image.convert("RGB") for image in data["train"]["image"]])
    codes = tokenize_pixels(default.model.vision_tokenizer, pixels)
    pairs = qa_pairs(data["train"], recipe.binding_questions, recipe.seed)
    rows = SequenceBuilder(default.processor).rows(pairs, codes, default.model.config.visual_token_offset)

    test = data["test"]
    images = [image.convert("RGB") for image in test["image"]]
    counts = [(i, q["question"], int(q["answer"])) for i, row in enumerate(test) for q in row["count_questions"]]
    presence = [
        (i, q["question"], q["answer"], presence_kind(q, row["objects"]))
        for i, row in enumerate(test)
        for q in row["presence_questions"]
    ]

    def ask(model, items):
        return generate_answers(model, default.processor, [images[i] for i, *_ in items], [q for _, q, *_ in items], 4)

    results = []
    for learning_rate in args.learning_rates:
        start = time.perf_counter()
        model = train_language_model(recipe, default, rows, learning_rate, args.steps)
        seconds = time.perf_counter() - start

        oc = load_metric("object_counting").compute(predictions=ask(model, counts), references=[r for *_, r in counts])
        right, total = Counter(), Counter()
        for answer, (_, _, reference, kind) in zip(ask(model, presence), presence):
            total[kind] += 1
            right[kind] += answer.lower().startswith(reference)
        mci = sum(right.values()) / len(presence)
        by_kind = {kind: right[kind] / total[kind] for kind in KINDS if total[kind]}
        results.append((learning_rate, float(oc["accuracy"]), mci, by_kind, seconds))
        print(f"lr {learning_rate:g}: OC {oc['accuracy']:.3f}, MCI {mci:.3f} ({seconds:.0f} s)", flush=True)

    kinds = [kind for kind in KINDS if kind in results[0][3]]
    print(f"\n{args.steps} steps, {recipe.num_train} training scenes, {args.test_scenes} test scenes\n")
    print("| learning rate | OC | MCI | MCI vs baseline | " + " | ".join(f"MCI: {k}" for k in kinds) + " | seconds |")
    print("| --- " * (5 + len(kinds)) + "|")
    baseline = results[0][2]
    for learning_rate, oc, mci, by_kind, seconds in results:
        cells = " | ".join(f"{by_kind[k]:.3f}" for k in kinds)
        print(
            f"| {learning_rate:g} | {oc:.3f} | {mci:.3f} | {mci / baseline if baseline else float('nan'):.2f}x | {cells} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
