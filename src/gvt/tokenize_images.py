"""Tokenize image files with a GVTVisionTokenizer: the library side of `gvt tokenize`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .configuration_gvt import GVTVisionConfig
from .image_processing_gvt import GVTImageProcessor, load_image
from .modeling_gvt import GVTVisionTokenizer, Selection


def tiny_random_tokenizer(seed: int = 0) -> GVTVisionTokenizer:
    """A reproducible tiny random LaVIT tokenizer (the `"tiny"` preset), for demos and smoke tests."""
    torch.manual_seed(seed)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()


def load_tokenizer_and_processor(
    model: str | os.PathLike | None = None, seed: int = 0
) -> tuple[GVTVisionTokenizer, GVTImageProcessor]:
    """Load a tokenizer (a folder or Hub id; a tiny random one when `model` is None) and a matching processor."""
    if model is None:
        tokenizer = tiny_random_tokenizer(seed)
    else:
        tokenizer = GVTVisionTokenizer.from_pretrained(model).eval()
    size = tokenizer.config.image_size
    return tokenizer, GVTImageProcessor(size={"height": size, "width": size})


def tokenize_files(
    tokenizer: GVTVisionTokenizer,
    processor: GVTImageProcessor,
    paths: Sequence[str | os.PathLike],
    selection: Selection = "deterministic",
    seed: int = 0,
    max_tokens: int | None = None,
) -> list[dict]:
    """Tokenize image files as one batch; returns, per image, its token ids and counts."""
    images = [load_image(path) for path in paths]
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    generator = torch.Generator().manual_seed(seed) if selection == "sample" else None
    output = tokenizer.tokenize(pixel_values, selection=selection, generator=generator, max_tokens=max_tokens)
    counts = output.attention_mask.sum(dim=1).tolist()
    return [
        {
            "image": str(path),
            "num_tokens": count,
            "num_patches": tokenizer.config.num_patches,
            "token_ids": output.token_ids[row, :count].tolist(),
        }
        for row, (path, count) in enumerate(zip(paths, counts))
    ]
