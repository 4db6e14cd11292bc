"""The model card (README.md) of the embedded default, written by the recipe from its metrics and training log."""

from __future__ import annotations

from pathlib import Path

BRANCH_NAMES = {
    "frozen_ids": "frozen tokenizer, visual ids",
    "frozen_embeddings": "frozen tokenizer, codebook embeddings",
    "ett": "ETT (codebook embeddings, tokenizer tuned)",
}
SPLIT_NAMES = {"test": "test split", "test_shifted": "shifted test split"}
# Differences smaller than these are within the run-to-run noise of 300 scenes.
NOISE_MARGINS = {"oc_accuracy": 0.02, "mci_accuracy": 0.02, "caption_cider": 0.05}


def metrics_table(metrics: dict, split: str) -> str:
    """The three branches on one split: OC / MCI / caption metrics and visual tokens per image."""
    lines = [
        "| LLM input | OC acc | OC MAE | MCI acc | caption CIDEr | BLEU-4 | visual tokens / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, name in BRANCH_NAMES.items():
        if key not in metrics:
            continue
        m = metrics[key][split]
        name = f"**{name} - shipped**" if key == metrics["shipped"] else name
        lines.append(
            f"| {name} | {m['oc_accuracy']:.3f} | {m['oc_mae']:.3f} | {m['mci_accuracy']:.3f} | "
            f"{m['caption_cider']:.3f} | {m['caption_bleu']:.3f} | {m['mean_visual_tokens']:.2f} |"
        )
    return "\n".join(lines)


def count_table(metrics: dict) -> str:
    """OC accuracy (and mean answer) of the shipped branch per true count, on each split."""
    shipped = metrics[metrics["shipped"]]
    counts = sorted({int(c) for split in SPLIT_NAMES for c in shipped[split]["oc_accuracy_by_count"]})
    lines = ["| split | " + " | ".join(str(c) for c in counts) + " |", "|---" * (len(counts) + 1) + "|"]
    for split, name in SPLIT_NAMES.items():
        accuracy, mean = shipped[split]["oc_accuracy_by_count"], shipped[split]["oc_mean_answer_by_count"]
        cells = [f"{accuracy[str(c)]:.2f} ({mean[str(c)]:.1f})" if str(c) in accuracy else "-" for c in counts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ett_verdict(metrics: dict) -> str:
    """Where ETT helps or not against the frozen codebook embeddings (same input, same budget), on the test split;
    differences within `NOISE_MARGINS` count as none."""
    ett, frozen = metrics["ett"]["test"], metrics["frozen_embeddings"]["test"]
    fields = {"oc_accuracy": "OC accuracy", "mci_accuracy": "MCI accuracy", "caption_cider": "CIDEr"}
    worse = [label for key, label in fields.items() if ett[key] < frozen[key] - NOISE_MARGINS[key]]
    better = [label for key, label in fields.items() if ett[key] > frozen[key] + NOISE_MARGINS[key]]
    text = "Against the frozen codebook embeddings of the same budget, ETT "
    if not worse and not better:
        return text + "does not clearly help: every difference is within noise."
    if not worse:
        return text + f"helps {', '.join(better)} and matches the rest within noise."
    return text + f"does not help {', '.join(worse)}" + (f" (it helps {', '.join(better)})." if better else ".")


def write_model_card(folder: str | Path, metrics: dict, log: dict) -> Path:
    recipe, stages = log["recipe"], log["stages"]
    vision, text = recipe["vision_config"], recipe["text_config"]
    tokenizer_stage = stages.get("B_tokenizer", {})
    threads = "one CPU thread" if recipe["num_threads"] == 1 else f"{recipe['num_threads']} CPU threads"
    shipped = metrics["shipped"]
    selection = ", ".join(
        f"{BRANCH_NAMES[name]} {v['score']:.3f} (OC {v['oc_accuracy']:.3f} + MCI {v['mci_accuracy']:.3f})"
        for name, v in metrics["selection"]["validation"].items()
    )
    card = f"""---
library_name: transformers
pipeline_tag: image-to-text
tags: [gvt, lavit, ett, visual-tokenizer, synthetic]
license: apache-2.0
---

# gvt embedded default: a tiny LaVIT trained on synthetic GVTBench scenes

A complete LaVIT-style model small enough to train on a laptop CPU: a dynamic discrete visual tokenizer (ViT encoder
width {vision["hidden_size"]}, {vision["num_hidden_layers"]} blocks; token selector; {vision["merger_num_layers"]}-block merger;
{vision["codebook_size"]} x {vision["codebook_dim"]} codebook; feature decoder), a {text["num_hidden_layers"]}-layer Llama of width
{text["hidden_size"]} over a {recipe["text_vocab_size"]}-entry BPE vocabulary + `[IMG]`, `[/IMG]` and one id per code, read as
{"visual ids" if shipped == "frozen_ids" else "codebook embeddings through an MLP projector"} (shipped branch: `{shipped}`), and a tiny diffusion decoder pipeline in `decoder/`.
Trained from scratch in {log["training_seconds"] / 60:.1f} min on {threads} (peak memory {log["peak_memory_gb"]} GB) by
`python recipes/default_model/train.py` of the gvt repository (seed {recipe["seed"]}), which uses gvt's public training
API only.

It knows only the synthetic scenes of `gvt.data` ({recipe["image_size"]} px, coloured shapes on light, dark or textured
backgrounds, 0-8 objects of a kind among distractors, optional short strings): it is a demonstration and a test
fixture, not a general captioner.

## Use

```python
import gvt
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

# FOLDER: this repo (the copy shipped in the package is gvt.default_model.DEFAULT_MODEL_DIR)
model = AutoModelForImageTextToText.from_pretrained(FOLDER)
processor = AutoProcessor.from_pretrained(FOLDER)
captioner = pipeline("image-to-text", model=FOLDER, pipeline_class=gvt.GVTImageToTextPipeline)
captioner(image)                                     # caption (a path, PIL image, array, list, datasets column)
captioner(image, text="How many red circles are there?")
decoder = gvt.LaVITDecoderPipeline.from_pretrained(FOLDER + "/decoder", vision_tokenizer=model.vision_tokenizer)
```

Without `gvt` installed, a copy that carries its code (`gvt.default_model.export(OUT)` writes one) loads with
`trust_remote_code=True`.

## Results

Test split ({metrics["num_scenes"]["test"]} held-out scenes drawn like the training scenes):

{metrics_table(metrics, "test")}

Shifted test split ({metrics["num_scenes"]["test_shifted"]} scenes whose backgrounds, object sizes and counts are drawn
differently from training: `gvt.data.build_synthetic_dataset(num_shifted=...)`):

{metrics_table(metrics, "test_shifted")}

OC accuracy of the shipped branch per true count (mean answer in brackets):

{count_table(metrics)}

The shipped branch is chosen by the validation score ({metrics["selection"]["criterion"]},
{metrics["selection"]["num_validation_scenes"]} validation scenes): {selection}. {ett_verdict(metrics)}
Chance: MCI 0.5 (balanced yes/no). Mean visual tokens per image vs {metrics["fixed_token_baselines"]["lavit_fixed_grid"]}
patches at this size (256 for LaVIT / GVT at 224 px).

## How it was trained

- A: encoder pretraining on per-patch classes ("covered by shape x colour" or "centre of shape x colour").
- B: tokenizer with LaVIT's objective plus fine-grained supervision: keep targets on each object's centre patch and a
  code probe on the object class (validation: {tokenizer_stage.get("tokens_per_image", float("nan")):.2f} tokens per
  image for {tokenizer_stage.get("anchors_per_image", float("nan")):.2f} objects and strings; the token count equals
  that number on {tokenizer_stage.get("token_count_equals_anchor_count", float("nan")):.0%} of images).
- C: the language model on visual ids (captions, counting, presence and {recipe["binding_questions"]} colour/shape
  binding questions per scene) with `transformers.Trainer` and `gvt.training.GVTDataCollator`.
- D: three branches of equal budget: frozen ids, frozen codebook embeddings (`ETTCallback(train_tokenizer=False)`),
  ETT (`ETTCallback(train_selector=False)`: the model's own loss `L_caption + {recipe["ett_alpha"]} * L_reconstruction`,
  token selector kept); the best validation OC + MCI accuracy ships.
- E: decoder pipeline (tiny VAE and a two-level UNet trained on the tokenizer's ids).

## Limitations

The tokens carry what and how many, hardly where: object codes hold shape and colour and LaVIT's tokens have no
explicit position, so reconstructions through `decoder/` show colours and rough content, not the layout. Background
colour and the drawn strings are encoded weakly, so captions may guess them. Trained on synthetic scenes only.
"""
    path = Path(folder) / "README.md"
    path.write_text(card)
    return path
