"""Does training the detokenizer work? Train a tiny LaVITDecoderPipeline on a handful of synthetic (image, tokens)
pairs on the CPU and compare reconstructions (decode the pair's tokens) against the inputs, before and after.

    python benchmarks/train_decoder_psnr.py --steps 300

Prints the loss curve (mean of the first and last 20 steps) and the PSNR (dB, images in [0, 1]) of an untrained and
a trained pipeline, each with the same seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.conversion import build_tokenizer, load_lavit_release
from gvt.pipeline_lavit_decoder import build_tiny_decoder_pipeline, tiny_unet_config
from gvt.training import train_decoder

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference" / "tiny_a" / "original"


def load_vision_tokenizer(source: str) -> GVTVisionTokenizer:
    """`"reference"`: the converted reference fixture (non-trivial weights, so different tokens give clearly
    different conditioning, as with a released tokenizer); `"random"`: a freshly initialised tiny tokenizer, whose
    feature decoder maps every token sequence to almost the same conditioning."""
    if source == "reference":
        return build_tokenizer(*load_lavit_release(FIXTURE, num_heads=4))
    torch.manual_seed(0)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()


def synthetic_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """`count` images `[count, 3, size, size]` in [0, 1]: a coloured background with a coloured square or disc."""
    rng = np.random.default_rng(seed)
    grid_y, grid_x = np.mgrid[0:size, 0:size]
    images = []
    for index in range(count):
        background, foreground = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        radius = rng.integers(size // 6, size // 3)
        if index % 2:
            inside = (grid_y - cy) ** 2 + (grid_x - cx) ** 2 <= radius**2
        else:
            inside = (abs(grid_y - cy) <= radius) & (abs(grid_x - cx) <= radius)
        image = np.where(inside[..., None], foreground, background)
        images.append(image.transpose(2, 0, 1))
    return torch.tensor(np.stack(images), dtype=torch.float32)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def fit_vae(vae, images: torch.Tensor, steps: int, kl_weight: float = 1e-6, lr: float = 2e-3) -> None:
    """Stand-in for a pretrained VAE (the release ships one): fit the tiny random VAE to the images, then set its
    `scaling_factor` so that scaled latents have unit variance (SD's convention)."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    pixels = images * 2 - 1
    for _ in range(steps):
        posterior = vae.encode(pixels).latent_dist
        loss = (
            torch.nn.functional.mse_loss(vae.decode(posterior.sample()).sample, pixels)
            + kl_weight * posterior.kl().mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        vae.register_to_config(scaling_factor=float(1 / vae.encode(pixels).latent_dist.mode().std()))


def reconstruct(pipe, ids, mask, steps, guidance, seed):
    generators = [torch.Generator().manual_seed(seed + i) for i in range(ids.shape[0])]
    return pipe(
        visual_token_ids=ids,
        attention_mask=mask,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generators,
        output_type="pt",
    ).images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--decoder-type", choices=["highres", "lowres"], default="highres")
    parser.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="epsilon")
    parser.add_argument("--snr-gamma", type=float, default=None)
    parser.add_argument("--ema", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.1, help="conditioning dropout (for guidance)")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--vae-steps", type=int, default=400, help="fit the tiny VAE first (0: keep it random)")
    parser.add_argument("--unet-width", type=int, default=32, help="two-level UNet of this width (0: the tiny one)")
    parser.add_argument("--tokenizer", choices=["reference", "random"], default="reference")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_vision_tokenizer(args.tokenizer)
    pipe = build_tiny_decoder_pipeline(tokenizer, args.decoder_type, sample_size=args.size // 2)
    if args.unet_width:
        config = tiny_unet_config(pipe.conditioning, args.size // 2)
        width = args.unet_width
        config.update(
            block_out_channels=(width, 2 * width),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=8,
        )
        pipe.unet = UNet2DConditionModel(**config)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.conditioning, pipe.unet, pipe.vae):
        module.eval()

    images = synthetic_images(args.images, args.size)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, tokenizer.config.codebook_size, (args.images, args.tokens), generator=generator)
    mask = torch.ones_like(ids)

    if args.vae_steps:
        fit_vae(pipe.vae, images, args.vae_steps)
    # The VAE is frozen: the best any decoder can do is the VAE's own reconstruction.
    with torch.no_grad():
        latents = pipe.vae.encode(images * 2 - 1).latent_dist.mode()
        vae_ceiling = psnr(pipe.vae.decode(latents).sample.add(1).div(2).clamp(0, 1), images)

    before = reconstruct(pipe, ids, mask, args.sample_steps, args.guidance, seed=100)
    start = time.perf_counter()
    history = train_decoder(
        pipe,
        images * 2 - 1,
        ids,
        mask,
        num_steps=args.steps,
        batch_size=args.images,
        learning_rate=args.lr,
        prediction_type=args.prediction_type,
        snr_gamma=args.snr_gamma,
        use_ema=args.ema,
        conditioning_dropout=args.dropout,
    )
    seconds = time.perf_counter() - start
    after = reconstruct(pipe, ids, mask, args.sample_steps, args.guidance, seed=100)

    losses = history.losses
    window = min(20, len(losses))
    print("| setting | value |\n| --- | --- |")
    print(f"| VAE fitting steps | {args.vae_steps} |")
    print(f"| UNet parameters | {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f} M |")
    print(f"| vision tokenizer (codebook, decoder) | {args.tokenizer} |")
    print(f"| images x size x tokens | {args.images} x {args.size}px x {args.tokens} |")
    print(
        f"| decoder / prediction / snr_gamma / ema | {args.decoder_type} / {args.prediction_type} / {args.snr_gamma} / {args.ema} |"
    )
    print(f"| train steps (s) | {args.steps} ({seconds:.1f} s, {seconds / max(args.steps, 1) * 1000:.0f} ms/step) |")
    print(
        f"| loss first {window} / last {window} | {np.mean(losses[:window]):.4f} / {np.mean(losses[-window:]):.4f} |"
    )
    print(f"| PSNR untrained (dB) | {psnr(before, images):.2f} |")
    print(f"| PSNR trained (dB) | {psnr(after, images):.2f} |")
    print(f"| PSNR VAE ceiling (dB) | {vae_ceiling:.2f} |")
    # Cross-check: decoding another image's tokens must be worse, or the model ignores its conditioning.
    shuffled = reconstruct(pipe, ids.roll(1, dims=0), mask, args.sample_steps, args.guidance, seed=100)
    print(f"| PSNR trained, tokens of another image (dB) | {psnr(shuffled, images):.2f} |")


if __name__ == "__main__":
    main()
