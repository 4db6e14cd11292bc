"""Does the embedded default's decoded image follow its tokens? Images decoded from each scene's own visual tokens
against images decoded from another scene's tokens (the wrong-tokens baseline), both compared with the input.

    python benchmarks/decoder_fidelity.py [--num-scenes 32] [--steps 20]

Metrics, on held-out test scenes, with the same noise seed for both decodings of a scene:
- coarse L1: mean absolute RGB difference (0-255) between input and decoded image, both box-downsampled to 8x8
  (where the colours are, not the shapes' edges);
- mean-colour distance: Euclidean RGB distance between the images' average colours.
A decoder that keeps what the tokens carry has clearly lower errors with the own tokens than with the wrong ones.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from gvt.default_model import load_default
from gvt.demo import held_out_scenes


def coarse(image: Image.Image, size: int = 8) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def errors(inputs, decoded) -> tuple[float, float]:
    l1 = np.mean([np.abs(coarse(a) - coarse(b)).mean() for a, b in zip(inputs, decoded)])
    mean_colour = np.mean(
        [np.linalg.norm(coarse(a).mean((0, 1)) - coarse(b).mean((0, 1))) for a, b in zip(inputs, decoded)]
    )
    return float(l1), float(mean_colour)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-scenes", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (the demo's)")
    args = parser.parse_args()
    default = load_default(with_decoder=True)
    config = default.model.config.vision_config
    scenes = held_out_scenes(args.num_scenes, config.image_size, 0)
    images = [scene["image"].convert("RGB") for scene in scenes]
    pixels = default.processor.image_processor(images, return_tensors="pt")["pixel_values"]
    tokens = default.model.vision_tokenizer.tokenize(pixels)
    wrong = torch.roll(torch.arange(len(images)), 1)  # scene i decoded from scene i-1's tokens

    def decode(token_ids, attention_mask):
        generators = [torch.Generator().manual_seed(index) for index in range(len(images))]
        return default.decoder(
            visual_token_ids=token_ids,
            attention_mask=attention_mask,
            generator=generators,
            num_inference_steps=args.steps,
            output_type="pil",
        ).images

    own = errors(images, decode(tokens.token_ids, tokens.attention_mask))
    other = errors(images, decode(tokens.token_ids[wrong], tokens.attention_mask[wrong]))
    print(f"embedded default's decoder, {len(images)} held-out scenes, {args.steps} steps")
    print("| decoded from | coarse L1 (8x8, 0-255) | mean-colour distance |")
    print("|---|---:|---:|")
    print(f"| the scene's own tokens | {own[0]:.1f} | {own[1]:.1f} |")
    print(f"| another scene's tokens (baseline) | {other[0]:.1f} | {other[1]:.1f} |")
    print(f"| ratio own / baseline | {own[0] / other[0]:.2f} | {own[1] / other[1]:.2f} |")


if __name__ == "__main__":
    main()
