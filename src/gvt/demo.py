"""`gvt demo`: the main job on the embedded default.

Until a trained default ships, the demo runs a tiny *random* LaVIT tokenizer on a few drawn sample images and shows
what the package does end to end: dynamic-length token ids per image, padded batches with masks, the continuous
features for a language model, and the diffusion conditioning decoded back from the ids.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from .tokenize_images import load_tokenizer_and_processor


def sample_images(size: int = 112) -> dict[str, Image.Image]:
    """A flat image, a simple scene and a busy one: the token count should grow with content."""
    flat = Image.new("RGB", (size, size), (90, 140, 200))
    scene = flat.copy()
    draw = ImageDraw.Draw(scene)
    draw.ellipse((10, 10, 50, 50), fill=(220, 40, 40))
    draw.rectangle((60, 55, 100, 95), fill=(40, 180, 60))
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return {"flat colour": flat, "two shapes": scene, "noise": Image.fromarray(noise)}


def run_demo(model: str | None = None, seed: int = 0) -> dict:
    start = time.perf_counter()
    tokenizer, processor = load_tokenizer_and_processor(model, seed=seed)
    images = sample_images(tokenizer.config.image_size)
    pixel_values = processor(list(images.values()), return_tensors="pt")["pixel_values"]
    tokens = tokenizer.tokenize(pixel_values)
    with torch.no_grad():
        features = tokenizer.encode_features(pixel_values)
        conditioning = tokenizer.decode(tokens.token_ids, tokens.attention_mask) if tokenizer.decoders else None
    counts = tokens.attention_mask.sum(dim=1).tolist()
    print(
        f"GVTVisionTokenizer ({'tiny random' if model is None else model}): "
        f"{tokenizer.config.num_patches} patches per image, codebook {tokenizer.config.codebook_size}"
    )
    print(f"{'image':<14}{'tokens':>8}  first ids")
    for row, (name, count) in enumerate(zip(images, counts)):
        ids = tokens.token_ids[row, :count].tolist()
        print(f"{name:<14}{count:>8}  {' '.join(map(str, ids[:12]))}{' ...' if count > 12 else ''}")
    print(f"padded batch: token_ids {tuple(tokens.token_ids.shape)}, features {tuple(features.features.shape)}")
    if conditioning is not None:
        print(
            f"decoded conditioning: prompt_embeds {tuple(conditioning.prompt_embeds.shape)}, "
            f"pooled {tuple(conditioning.pooled_prompt_embeds.shape)}"
        )
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s")
    return {"token_counts": counts, "seconds": seconds}
