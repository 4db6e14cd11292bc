"""Does training the detokenizer work? Train a small LaVITDecoderPipeline on a handful of synthetic scenes and their
visual tokens on the CPU, and compare DDIM reconstructions (decode an image's tokens) against the inputs: untrained vs
trained, and the right tokens vs another image's tokens (a model that ignores its conditioning scores the same on
both).

    python benchmarks/train_decoder_psnr.py --steps 300

The recipe that works (memorisation setting): 6 scenes at 32 px, all in every batch; tokens from the converted
reference tokenizer (its own selection by default, 0-18 tokens per image; `--tokens all` keeps all 64 patches, which
works less well: conditioning from many tokens differs less between images; the script prints how much the ids and
the conditioning differ); a freshly initialised tokenizer (`--tokenizer random`) does not work: its feature decoder
maps every token sequence to the same conditioning, and training does not fix that within a few hundred steps; a
two-level UNet (width 32/64, attention head dim 8) whose cross-attention width is the conditioning's;
v-prediction (at high noise the target is close to the clean latent, so using the conditioning pays off; epsilon
barely helps here), the conditioning model trained jointly (`--conditioning-lr` gives it its own rate), conditioning
dropout 0.1; the tiny VAE fitted to the images first (a stand-in for the release's pretrained VAE).

Prints one markdown table: PSNR (dB, images in [0, 1]) at guidance 1 and 3, with the loss and timings. Use one thread
(the default) on a shared CPU: more threads than free cores made a step ~20x slower.
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
from gvt.data import generate_scene
from gvt.pipeline_lavit_decoder import build_tiny_decoder_pipeline, two_level_unet_config
from gvt.training import fit_vae, train_decoder

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference" / "tiny_a" / "original"


def load_vision_tokenizer(source: str) -> GVTVisionTokenizer:
    """`"reference"`: the converted reference fixture (non-trivial weights, so different tokens give clearly
    different conditioning, as with a released tokenizer); `"random"`: a freshly initialised tiny tokenizer, whose
    feature decoder maps every token sequence to almost the same conditioning."""
    if source == "reference":
        return build_tokenizer(*load_lavit_release(FIXTURE, num_heads=4))
    torch.manual_seed(0)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()


def scene_images(count: int, seed: int = 1000) -> torch.Tensor:
    """`count` synthetic scenes (`gvt.data.generate_scene`, full size) `[count, 3, 112, 112]` in [0, 1]."""
    arrays = [np.array(generate_scene(seed + index).image.convert("RGB")) for index in range(count)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def visual_tokens(pipe, images: torch.Tensor, mode: str, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids + mask of `images`: `"all"` keeps every patch, `"selector"` the tokenizer's own choice, `"random"`
    draws `count` random ids per image (no relation to the content)."""
    tokenizer = pipe.vision_tokenizer
    if mode == "random":
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(0, tokenizer.config.codebook_size, (images.shape[0], count), generator=generator)
        return ids, torch.ones_like(ids)
    with torch.no_grad():
        pixel_values = pipe.preprocess_images(images)
        keep_mask = None
        if mode == "all":
            patches = (tokenizer.config.image_size // tokenizer.config.patch_size) ** 2
            keep_mask = torch.ones(images.shape[0], patches, dtype=torch.bool)
        output = tokenizer(pixel_values, keep_mask=keep_mask)
    return output.token_ids, output.attention_mask


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


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


def evaluate(pipe, ids, mask, images, steps, guidances) -> dict[float, tuple[float, float]]:
    """PSNR of reconstructions from the right tokens and from the next image's tokens, per guidance scale."""
    scores = {}
    for guidance in guidances:
        right = reconstruct(pipe, ids, mask, steps, guidance, seed=100)
        wrong = reconstruct(pipe, ids.roll(1, dims=0), mask.roll(1, dims=0), steps, guidance, seed=100)
        scores[guidance] = (psnr(right, images), psnr(wrong, images))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tokens", choices=["all", "selector", "random"], default="selector")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--conditioning-lr", type=float, default=None, help="default: --lr")
    parser.add_argument("--decoder-type", choices=["highres", "lowres"], default="highres")
    parser.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default="v_prediction")
    parser.add_argument("--snr-gamma", type=float, default=None)
    parser.add_argument("--ema", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.1, help="conditioning dropout (for guidance)")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--vae-steps", type=int, default=300, help="fit the tiny VAE first (0: keep it random)")
    parser.add_argument("--unet-width", type=int, default=32, help="two-level UNet of this width (0: the tiny one)")
    parser.add_argument("--attention-head-dim", type=int, default=8)
    parser.add_argument("--tokenizer", choices=["reference", "random"], default="reference")
    parser.add_argument("--threads", type=int, default=1, help="more threads than free cores slow training down")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_vision_tokenizer(args.tokenizer)
    pipe = build_tiny_decoder_pipeline(tokenizer, args.decoder_type, sample_size=args.size // 2)
    if args.unet_width:
        config = two_level_unet_config(pipe.conditioning, args.size // 2, args.unet_width, args.attention_head_dim)
        torch.manual_seed(0)
        pipe.unet = UNet2DConditionModel(**config)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=args.prediction_type)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.conditioning, pipe.unet, pipe.vae):
        module.eval()

    full_size = scene_images(args.images)
    images = torch.nn.functional.interpolate(full_size, size=(args.size, args.size), mode="area")
    ids, mask = visual_tokens(pipe, full_size, args.tokens)
    # The conditioning can only tell images apart if their tokens differ.
    lengths = mask.sum(dim=1)
    distinct = [len(set(row[keep.bool()].tolist())) for row, keep in zip(ids, mask)]
    differing = ((ids != ids.roll(1, dims=0)) | (mask != mask.roll(1, dims=0))).float().mean().item()
    with torch.no_grad():
        embeds = pipe.conditioning(ids, mask).prompt_embeds
        spread = (embeds - embeds.roll(1, dims=0)).abs().mean().item() / embeds.abs().mean().item()

    start = time.perf_counter()
    if args.vae_steps:
        fit_vae(pipe.vae, images * 2 - 1, args.vae_steps)
    vae_seconds = time.perf_counter() - start
    # The VAE is frozen: the best any decoder can do is the VAE's own reconstruction.
    with torch.no_grad():
        latents = pipe.vae.encode(images * 2 - 1).latent_dist.mode()
        vae_ceiling = psnr(pipe.vae.decode(latents).sample.add(1).div(2).clamp(0, 1), images)

    before = evaluate(pipe, ids, mask, images, args.sample_steps, args.guidance)
    start = time.perf_counter()
    history = train_decoder(
        pipe,
        images * 2 - 1,
        ids,
        mask,
        num_steps=args.steps,
        batch_size=args.images,
        learning_rate=args.lr,
        conditioning_learning_rate=args.conditioning_lr,
        prediction_type=args.prediction_type,
        snr_gamma=args.snr_gamma,
        use_ema=args.ema,
        conditioning_dropout=args.dropout,
    )
    seconds = time.perf_counter() - start
    after = evaluate(pipe, ids, mask, images, args.sample_steps, args.guidance)

    losses = history.losses
    window = min(20, len(losses))
    print("| setting | value |\n| --- | --- |")
    print(f"| images x size | {args.images} synthetic scenes x {args.size}px |")
    print(
        f"| tokens ({args.tokenizer} tokenizer, {args.tokens}) | {lengths.min()}-{lengths.max()} per image, "
        f"{min(distinct)}-{max(distinct)} distinct ids per image, {differing:.0%} of positions differ from the "
        f"next image's; conditioning differs by {spread:.1%} of its scale |"
    )
    print(f"| VAE fitting steps (s) | {args.vae_steps} ({vae_seconds:.1f} s) |")
    print(f"| UNet parameters | {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f} M |")
    print(
        f"| decoder / prediction / snr_gamma / ema / dropout | {args.decoder_type} / {args.prediction_type} / "
        f"{args.snr_gamma} / {args.ema} / {args.dropout} |"
    )
    print(f"| lr UNet / conditioning | {args.lr} / {args.conditioning_lr or args.lr} |")
    print(
        f"| train steps (s, threads) | {args.steps} ({seconds:.1f} s, {seconds / max(args.steps, 1) * 1000:.0f} "
        f"ms/step, {args.threads} thread(s)) |"
    )
    print(
        f"| loss first {window} / last {window} | {np.mean(losses[:window]):.4f} / {np.mean(losses[-window:]):.4f} |"
    )
    print(f"| PSNR VAE ceiling (dB) | {vae_ceiling:.2f} |")
    for guidance in args.guidance:
        print(
            f"| PSNR DDIM {args.sample_steps} steps, guidance {guidance}: untrained / trained right tokens / trained "
            f"tokens of another image (dB) | {before[guidance][0]:.2f} / {after[guidance][0]:.2f} / "
            f"{after[guidance][1]:.2f} |"
        )


if __name__ == "__main__":
    main()
