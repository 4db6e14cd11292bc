"""Hub model cards for converted LaVIT / GVT repos: YAML metadata (`huggingface_hub.ModelCardData`), usage snippets
(captioning, VQA, tokenization, text-to-image), the reference results and the conversion provenance.

    from gvt.model_cards import build_model_card, save_model_card, validate_model_card
    card = build_model_card(repo_id="my-org/LaVIT-7B-v2-hf", kind="lavit")
    validate_model_card(card)          # offline checks (the Hub's own validator needs the network)
    save_model_card(card, "README.md")  # written beside, then renamed into place

The usage snippets are fenced ```python blocks that run in order in one namespace; `extract_snippets` returns them
(the tests run them against a tiny converted repo).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from .atomic_write import atomic_output_file

TAGS = ["gvt", "lavit", "visual-tokenizer", "image-text-to-text", "custom_code"]

# Hub license identifiers used by these releases (a subset of the Hub's list; offline validation only).
KNOWN_LICENSES = {"apache-2.0", "mit", "llama2", "llama3", "bsd-3-clause", "cc-by-4.0", "cc-by-nc-4.0", "other"}
KNOWN_PIPELINE_TAGS = {"image-text-to-text", "image-to-text", "text-to-image", "visual-question-answering"}
REQUIRED_METADATA = ("library_name", "pipeline_tag", "license", "base_model", "tags")

LAVIT_SOURCE = "https://github.com/jy0205/LaVIT"
GVT_SOURCE = "https://github.com/TencentARC/GVT"

# (task type, task name, dataset id, dataset name, metric type, metric name, value): LaVIT-v2 (Llama-2-7B) as
# reported in the LaVIT repository's README (zero-shot); not re-measured here.
LAVIT_RESULTS = [
    ("image-to-text", "Image captioning", "coco", "COCO Karpathy test", "cider", "CIDEr", 133.3),
    ("image-to-text", "Image captioning", "nocaps", "NoCaps val", "cider", "CIDEr", 112.0),
    ("image-to-text", "Image captioning", "flickr30k", "Flickr30k test", "cider", "CIDEr", 81.4),
    ("visual-question-answering", "VQA", "vqav2", "VQAv2 test-dev", "accuracy", "Accuracy", 68.3),
    ("visual-question-answering", "VQA", "ok_vqa", "OK-VQA", "accuracy", "Accuracy", 55.9),
    ("visual-question-answering", "VQA", "gqa", "GQA test-dev", "accuracy", "Accuracy", 47.9),
    ("visual-question-answering", "VQA", "vizwiz", "VizWiz", "accuracy", "Accuracy", 41.0),
    ("text-to-image", "Text-to-image", "coco", "MS-COCO 30k", "fid", "FID", 7.1),
]
# GVT's GVTBench (object counting accuracy / multi-class identification accuracy), as published.
GVT_RESULTS = [
    ("visual-question-answering", "Object counting", "coco", "GVTBench OC (COCO)", "accuracy", "Accuracy", 56.2),
    (
        "visual-question-answering",
        "Multi-class identification",
        "coco",
        "GVTBench MCI (COCO)",
        "accuracy",
        "Accuracy",
        89.3,
    ),
    ("visual-question-answering", "Object counting", "vcr", "GVTBench OC (VCR)", "accuracy", "Accuracy", 40.3),
    (
        "visual-question-answering",
        "Multi-class identification",
        "vcr",
        "GVTBench MCI (VCR)",
        "accuracy",
        "Accuracy",
        78.9,
    ),
]

DEFAULTS: dict[str, dict[str, Any]] = {
    "lavit": {
        "base_model": "rain1011/LaVIT-7B-v2",
        "license": "llama2",
        "datasets": ["laion/laion2B-en", "JourneyDB/JourneyDB"],
        "title": "LaVIT-7B-v2 (gvt conversion)",
        "source": LAVIT_SOURCE,
    },
    "gvt": {
        "base_model": "lmsys/vicuna-7b-v1.1",
        "license": "other",
        "datasets": ["laion/laion2B-en"],
        "title": "GVT (gvt conversion)",
        "source": GVT_SOURCE,
    },
}

_LOAD = """```python
import gvt  # registers the gvt classes (without the package: trust_remote_code=True instead)
import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

repo = "{repo_id}"
model = AutoModelForImageTextToText.from_pretrained(repo).eval()
processor = AutoProcessor.from_pretrained(repo)
# any RGB image: Image.open("photo.jpg"); here a synthetic one
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
```"""

_CAPTION = """```python
# Captioning: `[IMG] <image> [/IMG]` and no prompt; caption defaults come from generation_config.json
inputs = processor(images=image, text="", return_tensors="pt")
with torch.no_grad():
    inputs = model.expand_image_tokens(**inputs)  # the image at its own number of positions, as generate returns it
    output = model.generate(**inputs)
caption = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
print(caption)
```"""

_VQA = """```python
# Visual question answering with the reference's prompt and decoding settings
question = "What is in the picture?"
inputs = processor(images=image, text="{vqa_prompt}".format(question), return_tensors="pt")
with torch.no_grad():
    inputs = model.expand_image_tokens(**inputs)
    output = model.generate(**inputs, {vqa_kwargs})
answer = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
print(answer)
```"""

_TOKENIZE_LAVIT = """```python
# Tokenization: dynamic-length discrete visual tokens (codebook indices), and LLM ids with the image pre-tokenized
pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
tokens = model.vision_tokenizer.tokenize(pixel_values)
codes = tokens.token_ids[tokens.attention_mask.bool()]
print(f"{codes.numel()} visual tokens:", codes.tolist()[:16])
pretokenized = processor(images=image, text="", vision_tokenizer=model.vision_tokenizer, return_tensors="pt")
print(pretokenized["input_ids"].shape)
```"""

_TOKENIZE_GVT = """```python
# Tokenization: GVT's fixed number of continuous visual tokens (perceiver resampler latents, projected)
pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    features = model.vision_tokenizer.encode_features(pixel_values).features
print(features.shape)  # [1, num_latents, hidden_size of the LLM]
```"""

_TEXT_TO_IMAGE = """```python
# Text-to-image: the LLM samples visual ids after [IMG] (classifier-free guidance on the logits), then the diffusion
# decoder (in the `decoder/` subfolder) turns them into pixels
import os
from huggingface_hub import constants, snapshot_download
from transformers import GenerationConfig
from gvt import LaVITDecoderPipeline

sampling = GenerationConfig.from_pretrained(repo, "image_generation_config.json")
torch.manual_seed(0)
prompt = processor(text="a sculpture of a duck made of wool", return_tensors="pt")
visual = model.generate_images(
    **prompt,
    guidance_scale=sampling.guidance_scale,
    do_sample=True,
    top_k=sampling.top_k,
    top_p=sampling.top_p,
    num_beams=sampling.num_beams,  # not the captioning beams of generation_config.json
    max_new_tokens=model.config.vision_config.num_patches,  # at most one token per patch
)
local = repo if os.path.isdir(repo) else snapshot_download(repo, local_files_only=constants.HF_HUB_OFFLINE)
decoder = LaVITDecoderPipeline.from_pretrained(os.path.join(local, "decoder"))
decoder.set_progress_bar_config(disable=True)
picture = decoder(
    visual_token_ids=visual.image_token_ids,
    attention_mask=visual.attention_mask,
    num_inference_steps={steps},
    generator=torch.Generator().manual_seed(0),
).images[0]
picture.save("lavit_text_to_image.png")
```"""


def _results_table(rows: list[tuple]) -> str:
    lines = ["| Task | Dataset | Metric | Value |", "| --- | --- | --- | --- |"]
    lines += [f"| {task} | {dataset} | {metric} | {value} |" for _, task, _, dataset, _, metric, value in rows]
    return "\n".join(lines)


def _eval_results(rows: list[tuple], source: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=task_type,
            task_name=task,
            dataset_type=dataset_id,
            dataset_name=dataset,
            metric_type=metric_type,
            metric_name=metric,
            metric_value=value,
            source_name="reported by the original authors",
            source_url=source,
        )
        for task_type, task, dataset_id, dataset, metric_type, metric, value in rows
    ]


def _provenance(summary: Any) -> str:
    if summary is None:
        return "Converted with `gvt`'s conversion scripts (no conversion summary was given to the card generator)."
    data = summary if isinstance(summary, dict) else summary.__dict__
    vocab = data.get("vocabulary", {})
    lines = [
        f"- Converted by `gvt` {data.get('gvt_version', '')} from `{data.get('source', '')}` "
        f"({data.get('kind', '')}, weights {data.get('dtype', '')}), "
        f"{data.get('num_parameters', 0) / 1e6:.1f} M parameters in {data.get('num_tensors', 0)} tensors, "
        f"{len(data.get('shards', []))} safetensors shard(s).",
        f"- Image input mode: `{data.get('image_input_mode', '')}`"
        + (
            " (`language_model/visual_weight` applied: the release's understanding model)."
            if data.get("understanding")
            else "."
        ),
        "- Every tensor of the release was used (ignored only: " + "; ".join(data.get("ignored_keys", [])) + ").",
    ]
    if vocab:
        lines.append(
            f"- Vocabulary: {vocab.get('source_rows')} released rows (text, `[IMG]` = {vocab.get('image_start_token_id')}, "
            f"`[/IMG]` = {vocab.get('image_end_token_id')}, visual code c = {vocab.get('visual_token_offset')} + c); "
            f"{vocab.get('vocab_size', 0) - vocab.get('source_rows', 0)} row(s) appended for the processor's "
            f"placeholder tokens (`<image>` = {vocab.get('image_token_id')}), initialised to the mean of the released "
            "rows of the embedding and of the LM head. The placeholder is always replaced by the image's tokens, so "
            "its row is never read."
        )
    if data.get("decoders"):
        folders = ", ".join(f"`{'decoder' if d == 'highres' else 'decoder_lowres'}/` ({d})" for d in data["decoders"])
        lines.append(f"- Diffusion decoders: {folders}, assembled from the release's UNet / VAE / scheduler folders.")
    lines.append(f"- Full record: `conversion_provenance.json`:\n\n```json\n{json.dumps(data, indent=1)[:1500]}\n```")
    return "\n".join(lines)


def build_model_card(
    repo_id: str = "gvt-community/LaVIT-7B-v2-hf",
    kind: Literal["lavit", "gvt"] = "lavit",
    summary: Any = None,
    base_model: str | list[str] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    decoder_steps: int = 25,
    extra_tags: Iterable[str] = (),
) -> ModelCard:
    """A `huggingface_hub.ModelCard` for a converted repo. `summary`: the conversion's `ConversionSummary` (or its
    dict), rendered as the provenance section; `kind` picks the defaults (base model, license, datasets, results)."""
    from .release_conversion import VQA_GENERATION_DEFAULTS, VQA_PROMPT

    if kind not in DEFAULTS:
        raise ValueError(f"kind must be 'lavit' or 'gvt', got {kind!r}.")
    if summary is not None:
        data = summary if isinstance(summary, dict) else summary.__dict__
        if data.get("kind") not in (None, kind):
            raise ValueError(f"The summary is of a {data.get('kind')!r} conversion but kind={kind!r}.")
    defaults = DEFAULTS[kind]
    rows = LAVIT_RESULTS if kind == "lavit" else GVT_RESULTS
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=base_model or defaults["base_model"],
        license=license or defaults["license"],
        datasets=datasets if datasets is not None else defaults["datasets"],
        tags=list(dict.fromkeys([*TAGS, kind, *extra_tags])),
        model_name=repo_id.split("/")[-1],
        eval_results=_eval_results(rows, defaults["source"]),
    )
    vqa_kwargs = ", ".join(f"{k}={v!r}" for k, v in VQA_GENERATION_DEFAULTS.items())
    snippets = [
        _LOAD.format(repo_id=repo_id),
        _CAPTION,
        _VQA.format(vqa_prompt=VQA_PROMPT, vqa_kwargs=vqa_kwargs),
        _TOKENIZE_LAVIT if kind == "lavit" else _TOKENIZE_GVT,
    ]
    if kind == "lavit":
        snippets.append(_TEXT_TO_IMAGE.format(steps=decoder_steps))
    if kind == "lavit":
        intro = (
            "LaVIT unifies vision and language in one Llama-2-7B: a dynamic discrete visual tokenizer turns an image "
            "into a variable number of visual tokens that the LLM reads and writes as words of its vocabulary; a "
            "diffusion decoder turns generated tokens back into pixels. This repo is the released LaVIT-7B-v2, "
            "converted to Hugging Face `transformers` / `diffusers` classes by the `gvt` package."
        )
    else:
        intro = (
            "GVT: an EVA-02 visual encoder and a perceiver resampler (fixed latents) feeding a Vicuna/Llama LLM, "
            'converted to Hugging Face classes by the `gvt` package (`image_input_mode="features"`). GVT had no image '
            "delimiter tokens; the converted vocabulary appends `<image>`, `[IMG]`, `[/IMG]` (mean-initialised rows), "
            "which the original never saw: expect small deviations until fine-tuned."
        )
    body = f"""
# {defaults["title"]}

{intro}

## Usage

Install `gvt` (`pip install gvt`), or load without it through the repo's own code with `trust_remote_code=True`.
Loading the diffusion decoder needs the package imported (diffusers resolves the component classes from it).

{chr(10).join(snippets[:2])}

{snippets[2]}

{snippets[3]}
{chr(10) + snippets[4] if len(snippets) > 4 else ""}

Notes:
- Images are tokenized deterministically (keep a patch where log p_keep >= log p_drop); the reference samples the
  token selection at inference. `model.vision_tokenizer.tokenize(..., selection="sample", generator=...)` samples.
- The reference captions without a BOS token; pass `add_special_tokens=False` to the processor to match it exactly.
- Generation never emits visual ids while writing text, and only visual ids and `[/IMG]` while writing an image.

## Results (reported by the original authors)

{_results_table(rows)}

Source: {defaults["source"]} (not re-measured on this conversion; the conversion itself is checked against
outputs of the original code, see below).

## Conversion provenance

{_provenance(summary)}
"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    return card


def extract_snippets(text: str) -> list[str]:
    """The fenced ```python blocks of a card, in order."""
    return re.findall(r"```python\n(.*?)```", str(text), flags=re.DOTALL)


def validate_model_card(card: ModelCard | str) -> ModelCardData:
    """Offline validation: the YAML header parses back into `ModelCardData` without errors (including the
    `model-index` of the results), the required fields are present, `pipeline_tag` and `license` are known Hub
    identifiers, and `base_model` / `datasets` are valid repo ids. Raises `ValueError` naming the problem.

    (`ModelCard.validate()` posts to the Hub's validator and needs the network; call it before pushing when online.)"""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(card)
    if not text.startswith("---\n"):
        raise ValueError("The card does not start with a YAML metadata block.")
    parsed = ModelCard(text, ignore_metadata_errors=False)
    data = parsed.data
    as_dict = data.to_dict()
    absent = [name for name in REQUIRED_METADATA if not as_dict.get(name)]
    if absent:
        raise ValueError(f"The card's metadata lacks {absent}.")
    if data.pipeline_tag not in KNOWN_PIPELINE_TAGS:
        raise ValueError(f"Unknown pipeline_tag {data.pipeline_tag!r}.")
    if data.license not in KNOWN_LICENSES:
        raise ValueError(f"Unknown license {data.license!r}; use a Hub license id or 'other'.")
    names = [data.base_model] if isinstance(data.base_model, str) else list(data.base_model or [])
    names += [data.datasets] if isinstance(data.datasets, str) else list(data.datasets or [])
    for name in names:
        try:
            validate_repo_id(name)
        except HFValidationError as error:
            raise ValueError(f"Invalid repo id {name!r} in the card's metadata: {error}") from error
    if data.eval_results is not None and not all(r.metric_value is not None for r in data.eval_results):
        raise ValueError("An eval result has no value.")
    if ModelCard(str(parsed)).data.to_dict() != as_dict:
        raise ValueError("The card's metadata does not round-trip through ModelCard.")
    return data


def save_model_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """`card.save(path)` through [`gvt.atomic_write.atomic_output_file`]: a reader never sees half a card, and a
    stale staging file of a killed run is cleaned."""
    with atomic_output_file(path) as staging:
        card.save(staging)
    return Path(path)


__all__ = [
    "build_model_card",
    "extract_snippets",
    "validate_model_card",
    "save_model_card",
    "TAGS",
    "LAVIT_RESULTS",
    "GVT_RESULTS",
]
