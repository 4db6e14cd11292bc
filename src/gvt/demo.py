"""`gvt demo`: the main job, on the embedded default (a tiny LaVIT trained on synthetic GVTBench scenes).

Loads the shipped default through the Auto classes (or `--model FOLDER`), captions and answers counting (OC) and
presence (MCI) questions on held-out test scenes, prints the metrics table, and writes a picture: per scene the
input, its kept patches over the token selector's keep probability (heat map), and the reconstruction of its visual
tokens through the decoder pipeline, with the generated caption. Also the library side of `gvt caption`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .atomic_write import atomic_output_file, check_output_file, write_text_atomically
from .default_model import DefaultModel, load_default

DEFAULT_NUM_SCENES = 100
DEFAULT_PICTURE = "gvt_demo.png"
PICTURE_ROWS = 4
PANEL_SIZE = 168
JSON_KEYS = ("oc_accuracy", "oc_mae", "mci_accuracy", "caption_cider", "mean_visual_tokens", "seconds")


def _seed_of(default: DefaultModel) -> int:
    """The data seed the default was trained with (its test split is held out under that seed)."""
    log = default.path / "training_log.json"
    if log.is_file():
        return int(json.loads(log.read_text())["recipe"].get("seed", 0))
    return 0


def held_out_scenes(num_scenes: int, image_size: int, seed: int):
    """The first `num_scenes` scenes of the synthetic test split (independent of the training split's size)."""
    from .data import build_synthetic_dataset

    return build_synthetic_dataset(0, 0, num_scenes, image_size=image_size, seed=seed)["test"]


# ----------------------------------------------------------------------------------------------------------------
# The picture
# ----------------------------------------------------------------------------------------------------------------


def _heat_colour(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB of a black-red-yellow ramp."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    low = np.array([20, 20, 60], dtype=np.float32)
    mid = np.array([220, 40, 30], dtype=np.float32)
    high = np.array([255, 230, 60], dtype=np.float32)
    return np.where(values < 0.5, low + (mid - low) * values * 2, mid + (high - mid) * (values - 0.5) * 2)


def keep_heat_map(image: Image.Image, keep_probability: np.ndarray, keep_mask: np.ndarray, size: int) -> Image.Image:
    """The image, dimmed, under the selector's per-patch keep probability; kept patches outlined in white."""
    grid = keep_probability.shape[0]
    base = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    heat = _heat_colour(keep_probability)
    heat = np.asarray(
        Image.fromarray(heat.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST), dtype=np.float32
    )
    blended = Image.fromarray((0.35 * base + 0.65 * heat).astype(np.uint8))
    draw = ImageDraw.Draw(blended)
    cell = size / grid
    for row, column in zip(*np.nonzero(keep_mask)):
        x0, y0 = column * cell, row * cell
        draw.rectangle((x0 + 1, y0 + 1, x0 + cell - 2, y0 + cell - 2), outline=(255, 255, 255), width=2)
    return blended


def _text_panel(lines: Sequence[str], width: int, height: int) -> Image.Image:
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    y = 4
    for line in lines:
        words, current = line.split(), ""
        for word in words:  # greedy wrap at ~6 px per character
            if len(current) + len(word) + 1 > width // 6:
                draw.text((4, y), current, fill=(0, 0, 0))
                y, current = y + 12, word
            else:
                current = f"{current} {word}".strip()
        draw.text((4, y), current, fill=(0, 0, 0))
        y += 16
    return panel


DECODER_NOTE = (
    "* the tiny default's decoder: its images are barely closer to the input than images decoded from another image's\n"
    "tokens (coarse colour error 0.97x; benchmarks/decoder_fidelity.py). They show the pipeline runs, not what the tokens keep."
)
"""What the picture's decoded column shows, measured (see `benchmarks/decoder_fidelity.py`)."""


@torch.no_grad()
def demo_picture(
    default: DefaultModel,
    images: Sequence[Image.Image],
    captions: Sequence[str],
    references: Sequence[str],
    seed: int = 0,
    num_inference_steps: int = 20,
    size: int = PANEL_SIZE,
) -> Image.Image:
    """Rows of input | kept patches over the keep probability | reconstruction | generated and true caption."""
    model, processor = default.model, default.processor
    vision = model.vision_tokenizer
    pixels = processor.image_processor(list(images), return_tensors="pt")["pixel_values"].to(model.dtype)
    tokens = vision.tokenize(pixels)
    grid = vision.config.grid_size
    keep_probability = tokens.selector_log_probs[..., 0].exp().reshape(-1, grid, grid).float().numpy()
    keep_mask = tokens.keep_mask.reshape(-1, grid, grid).numpy()
    reconstructions: list[Image.Image | None] = [None] * len(images)
    if default.decoder is not None:
        generators = [torch.Generator().manual_seed(seed + index) for index in range(len(images))]
        reconstructions = default.decoder(
            visual_token_ids=tokens.token_ids,
            attention_mask=tokens.attention_mask,
            generator=generators,
            num_inference_steps=num_inference_steps,
            output_type="pil",
        ).images
    header = ["input", "kept patches / p(keep)", "decoded from tokens *", "captions"]
    text_width = 2 * size
    footer = 32
    canvas = Image.new("RGB", (3 * size + text_width, 20 + len(images) * size + footer), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(header):
        draw.text((column * size + 4, 4), title, fill=(0, 0, 0))
    draw.text((4, 24 + len(images) * size), DECODER_NOTE, fill=(0, 0, 0))
    for row, image in enumerate(images):
        y = 20 + row * size
        canvas.paste(image.convert("RGB").resize((size, size), Image.Resampling.NEAREST), (0, y))
        canvas.paste(keep_heat_map(image, keep_probability[row], keep_mask[row], size), (size, y))
        if reconstructions[row] is not None:
            canvas.paste(
                reconstructions[row].convert("RGB").resize((size, size), Image.Resampling.BICUBIC), (2 * size, y)
            )
        count = int(tokens.attention_mask[row].sum())
        lines = [f"model: {captions[row]}", f"truth: {references[row]}", f"{count} visual tokens of {grid * grid}"]
        canvas.paste(_text_panel(lines, text_width, size), (3 * size, y))
    return canvas


def _generated_text(output) -> str:
    """The text of one pipeline result (a dict, or a one-element list of dicts)."""
    if isinstance(output, list):
        output = output[0]
    return output["generated_text"].strip()


# ----------------------------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------------------------


def metrics_table(results: dict[str, Any]) -> str:
    rows = [
        ("OC accuracy", f"{results['oc_accuracy']:.3f}", f"{results['num_questions']['oc']} counting questions"),
        ("OC MAE / RMSE", f"{results['oc_mae']:.3f} / {results['oc_rmse']:.3f}", "objects"),
        ("MCI accuracy", f"{results['mci_accuracy']:.3f}", f"{results['num_questions']['mci']} yes/no questions"),
        ("caption CIDEr", f"{results['caption_cider']:.3f}", f"BLEU-4 {results['caption_bleu']:.3f}"),
        ("visual tokens / image", f"{results['mean_visual_tokens']:.2f}", f"of {results['num_patches']} patches"),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'metric':<{width}}  {'value':>13}  notes", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value:>13}  {note}" for name, value, note in rows]
    by_count = results.get("oc_accuracy_by_count", {})
    if by_count:
        support = results["oc_questions_by_count"]
        cells = [f"{count}: {by_count[count]:.2f} (n={support[count]})" for count in sorted(by_count, key=int)]
        lines.append("OC accuracy by true count: " + ", ".join(cells))
    return "\n".join(lines)


def run_demo(
    model: str | os.PathLike | None = None,
    num_scenes: int = DEFAULT_NUM_SCENES,
    seed: int | None = None,
    picture: str | os.PathLike | None = DEFAULT_PICTURE,
    json_path: str | os.PathLike | None = None,
    picture_rows: int = PICTURE_ROWS,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Evaluate the default (or the repo folder `model`) on `num_scenes` held-out test scenes, print the metrics
    table, write the picture (unless `picture` is None) and the JSON metrics (when `json_path` is given)."""
    from .default_model.evaluation import evaluate_gvtbench

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}.")
    for output in (picture, json_path):  # refuse an unusable output path before the evaluation, not after it
        if output is not None:
            check_output_file(output)
    start = time.perf_counter()
    default = load_default(model, with_decoder=picture is not None)
    seed = _seed_of(default) if seed is None else seed
    config = default.model.config.vision_config
    scenes = held_out_scenes(num_scenes, config.image_size, seed)
    print(
        f"gvt demo: {default.path} ({default.model.config.image_input_mode} inputs, codebook {config.codebook_size}); "
        f"{len(scenes)} held-out test scenes (seed {seed})",
        flush=True,
    )
    results = evaluate_gvtbench(default.model, default.processor, scenes, progress_bar=progress_bar)
    results["num_patches"] = config.num_patches
    print(metrics_table(results))
    for task in ("caption", "oc", "mci"):
        prompt, answer, reference = results["examples"][task][0]
        print(f"  {task:<7} {prompt or '(caption)'} -> {answer!r} (reference {reference!r})")

    if picture is not None:
        rows = min(picture_rows, len(scenes))
        images = [scenes[index]["image"].convert("RGB") for index in range(rows)]
        captioner = default.captioner()
        captions = [_generated_text(output) for output in captioner(images, max_new_tokens=48)]
        picture_image = demo_picture(default, images, captions, [scenes[i]["caption"] for i in range(rows)], seed)
        with atomic_output_file(picture) as staging:
            picture_image.save(staging, format="PNG")
        print(f"wrote {picture}")
        results["picture"] = str(picture)
    results["seconds"] = time.perf_counter() - start
    print(f"done in {results['seconds']:.1f} s")
    if json_path is not None:
        summary = {key: float(results[key]) for key in JSON_KEYS}
        summary.update(
            oc_rmse=float(results["oc_rmse"]),
            caption_bleu=float(results["caption_bleu"]),
            num_scenes=len(scenes),
            oc_accuracy_by_count=results["oc_accuracy_by_count"],
            num_questions=results["num_questions"],
            model=str(default.path),
        )
        write_text_atomically(json_path, json.dumps(summary, indent=1))
    return results


# ----------------------------------------------------------------------------------------------------------------
# gvt caption
# ----------------------------------------------------------------------------------------------------------------


def caption_files(
    paths: Sequence[str | os.PathLike],
    model: str | os.PathLike | None = None,
    prompt: str | None = None,
    max_new_tokens: int = 48,
) -> list[dict[str, str]]:
    """Caption image files (or answer `prompt` about them) with the default or the repo folder `model`.

    Every file is read first (`GVTImageProcessor`'s loader: EXIF rotation, transparency onto white, grayscale to RGB),
    so an unreadable one raises a `ValueError` / `FileNotFoundError` naming it before any work is done.
    """
    from .image_processing_gvt import load_image

    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"No image file at {path}.")
        try:
            images.append(load_image(str(path)))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    default = load_default(model, with_decoder=False)
    captioner = default.captioner()
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if prompt:
        outputs = captioner(images, text=[prompt] * len(images), return_full_text=False, **kwargs)
    else:
        outputs = captioner(images, **kwargs)
    return [{"image": str(path), "text": _generated_text(output)} for path, output in zip(paths, outputs)]


__all__ = ["run_demo", "caption_files", "demo_picture", "keep_heat_map", "metrics_table", "held_out_scenes"]
