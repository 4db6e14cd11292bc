"""Where the embedded default loses OC / MCI accuracy: the tokenizer or the language model.

    python benchmarks/default_model_diagnostics.py [--model FOLDER] [--train-scenes 1000] [--test-scenes 300]

Prints three tables on held-out test scenes:

1. The token selector against the anchor patches (one per object centre and one for the drawn string): tokens per
   image, how often the token count equals the anchor count, patch recall / precision.
2. A symbolic reader of the same visual tokens: each code is mapped to the object class it most often shows on
   training scenes, and OC / MCI questions are answered by counting those classes. This is what a perfect language
   model could reach with these tokens (the ceiling the tokenizer sets), next to the model's own accuracy.
3. The model's MCI accuracy by kind of question: "yes", and "no" whose pair shares the colour, the shape, both (with
   different objects) or nothing with the scene. A model that ignores shape fails the "no, colour present" rows.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np
import torch

from gvt.data import SyntheticSceneConfig, build_synthetic_dataset, dataset_patch_targets, object_class_id
from gvt.data.scene_vocabulary import OBJECT_COLOURS, SHAPE_NAMES
from gvt.default_model import load_default
from gvt.default_model.evaluation import generate_answers, presence_kind


@torch.no_grad()
def tokenize(default, split):
    pixels = default.processor.image_processor(
        [image.convert("RGB") for image in split["image"]], return_tensors="pt"
    )["pixel_values"]
    return default.model.vision_tokenizer.tokenize(pixels.to(default.model.dtype))


def kept_codes(tokens) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(tokens.token_ids, tokens.attention_mask)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a LaVIT repo folder (default: the embedded default)")
    parser.add_argument("--train-scenes", type=int, default=1000, help="scenes that map codes to classes")
    parser.add_argument("--test-scenes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = load_default(args.model)
    size = default.processor.image_processor.size["height"]
    patch = default.model.vision_tokenizer.config.patch_size
    data = build_synthetic_dataset(args.train_scenes, 0, args.test_scenes, size, 0, SyntheticSceneConfig())

    # code -> the class it most often shows on training scenes
    train_tokens = tokenize(default, data["train"])
    train_targets = dataset_patch_targets(data["train"], size, patch)
    votes: dict[int, Counter] = defaultdict(Counter)
    for codes, keep, labels in zip(kept_codes(train_tokens), train_tokens.keep_mask, train_targets.code_labels):
        for code, label in zip(codes, labels[keep.bool().numpy()]):
            votes[code][int(label)] += 1
    code_class = {code: counter.most_common(1)[0][0] for code, counter in votes.items()}
    class_pair = {object_class_id(s, c): (c, s) for s in SHAPE_NAMES for c in OBJECT_COLOURS}

    test = data["test"]
    tokens = tokenize(default, test)
    targets = dataset_patch_targets(test, size, patch)
    keep = tokens.keep_mask.bool().numpy()
    anchors = targets.keep.astype(bool)
    counts, anchor_counts = keep.sum(1), anchors.sum(1)
    codes = kept_codes(tokens)
    code_accuracy = np.mean(
        [code_class.get(c, -1) == int(label) for row, k, labels in zip(codes, keep, targets.code_labels)
         for c, label in zip(row, labels[k])]
    )  # fmt: skip
    print("| selector vs anchors (test) | value |\n| --- | --- |")
    print(f"| tokens / anchors per image | {counts.mean():.2f} / {anchor_counts.mean():.2f} |")
    print(f"| token count == anchor count | {(counts == anchor_counts).mean():.1%} of images |")
    print(
        f"| patch recall / precision | {(keep & anchors).sum() / anchors.sum():.3f} / {(keep & anchors).sum() / keep.sum():.3f} |"
    )
    print(f"| kept tokens whose code maps to their patch's class | {code_accuracy:.1%} |")

    oc_items, mci_items = [], []
    for index, row in enumerate(test):
        seen = [class_pair[code_class[c]] for c in codes[index] if code_class.get(c) in class_pair]
        for q in row["count_questions"]:
            guess = sum((not q["shape"] or s == q["shape"]) and (not q["colour"] or c == q["colour"]) for c, s in seen)
            oc_items.append((index, q["question"], q["answer"], guess))
        for q in row["presence_questions"]:
            guess = "yes" if (q["colour"], q["shape"]) in seen else "no"
            mci_items.append((index, q["question"], q["answer"], guess, presence_kind(q, row["objects"])))
    images = [image.convert("RGB") for image in test["image"]]

    def ask(items):
        return generate_answers(
            default.model, default.processor, [images[i] for i, *_ in items], [q for _, q, *_ in items], 4
        )

    oc_answers, mci_answers = ask(oc_items), ask(mci_items)
    oc_model = np.mean([a.split()[:1] == [str(ref)] for a, (_, _, ref, _) in zip(oc_answers, oc_items)])
    mci_model = [a.lower().startswith(ref) for a, (_, _, ref, _, _) in zip(mci_answers, mci_items)]
    print("\n| accuracy (test) | symbolic reader of the tokens | the model |\n| --- | --- | --- |")
    print(f"| OC | {np.mean([g == ref for _, _, ref, g in oc_items]):.3f} | {oc_model:.3f} |")
    print(f"| MCI | {np.mean([g == ref for _, _, ref, g, _ in mci_items]):.3f} | {np.mean(mci_model):.3f} |")

    print("\n| MCI question kind | questions | symbolic reader | the model |\n| --- | --- | --- | --- |")
    kinds = sorted({kind for *_, kind in mci_items}, key=lambda k: (k != "yes", k))
    for kind in kinds:
        rows = [i for i, item in enumerate(mci_items) if item[-1] == kind]
        reader = np.mean([mci_items[i][3] == mci_items[i][2] for i in rows])
        print(f"| {kind} | {len(rows)} | {reader:.3f} | {np.mean([mci_model[i] for i in rows]):.3f} |")


if __name__ == "__main__":
    main()
