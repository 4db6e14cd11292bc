"""Seconds per image of LaVITDecoderPipeline vs diffusers' own StableDiffusionXLPipeline with the same UNet, VAE and
scheduler, fed the same precomputed conditioning (so the difference is the pipeline's overhead plus, for
`LaVIT (token ids)`, the conditioning model).

    python benchmarks/bench_decoder.py [--steps 10] [--batch 2] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

from gvt.modeling_lavit_conditioning import LaVITConditioningModel
from gvt.pipeline_lavit_decoder import (
    LaVITDecoderPipeline,
    release_scheduler_config,
    tiny_unet_config,
    tiny_vae_config,
)

SIZES = {
    "tiny": {
        "conditioning": dict(codebook_size=512, decoder_hidden_size=64, decoder_num_layers=2, decoder_num_attention_heads=4,
                             decoder_intermediate_size=279, decoder_output_dim=96, decoder_num_queries=64,
                             decoder_max_positions=64, highres_cross_attention_dims=(40, 56), highres_pooled_dim=56),
        "unet": None,  # tiny_unet_config
        "vae": None,  # tiny_vae_config
        "sample_size": 16,
    },
    "mid": {
        "conditioning": dict(codebook_size=16384, decoder_hidden_size=256, decoder_num_layers=4,
                             decoder_num_attention_heads=8, decoder_intermediate_size=1024, decoder_output_dim=256,
                             decoder_num_queries=256, decoder_max_positions=256,
                             highres_cross_attention_dims=(128, 256), highres_pooled_dim=256),
        "unet": dict(block_out_channels=(64, 128), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=2, norm_num_groups=32,
                     attention_head_dim=8, use_linear_projection=True, addition_embed_type="text_time",
                     addition_time_embed_dim=32, transformer_layers_per_block=1),
        "vae": dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32, layers_per_block=1),
        "sample_size": 32,
    },
}  # fmt: skip


def build(size: str) -> LaVITDecoderPipeline:
    spec = SIZES[size]
    torch.manual_seed(0)
    conditioning = LaVITConditioningModel(decoder_type="highres", **spec["conditioning"]).eval()
    unet_config = tiny_unet_config(conditioning, spec["sample_size"])
    if spec["unet"] is not None:
        unet_config.update(spec["unet"])
        unet_config["projection_class_embeddings_input_dim"] = (
            conditioning.pooled_dim + 6 * spec["unet"]["addition_time_embed_dim"]
        )
    vae_config = tiny_vae_config(2 * spec["sample_size"])
    if spec["vae"] is not None:
        vae_config.update(spec["vae"])
    pipe = LaVITDecoderPipeline(
        conditioning=conditioning,
        unet=UNet2DConditionModel(**unet_config).eval(),
        vae=AutoencoderKL(**vae_config).eval(),
        scheduler=DDIMScheduler(**release_scheduler_config()),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(size: str, args: argparse.Namespace) -> None:
    pipe = build(size)
    height = pipe.default_sample_size * pipe.vae_scale_factor
    ids = torch.randint(0, pipe.conditioning.config.codebook_size, (args.batch, 64))
    with torch.no_grad():
        embeds = pipe.conditioning(ids)
    sdxl = StableDiffusionXLPipeline(
        vae=pipe.vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=pipe.unet, scheduler=pipe.scheduler, add_watermarker=False,
    )  # fmt: skip
    sdxl.set_progress_bar_config(disable=True)
    common = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, output_type="np")

    def lavit_ids():
        pipe(visual_token_ids=ids, generator=torch.Generator().manual_seed(0), **common)

    def lavit_embeds():
        pipe(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds,
             generator=torch.Generator().manual_seed(0), **common)  # fmt: skip

    def sdxl_embeds():
        sdxl(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds,
             negative_prompt_embeds=torch.zeros_like(embeds.prompt_embeds),
             negative_pooled_prompt_embeds=torch.zeros_like(embeds.pooled_prompt_embeds),
             height=height, width=height, generator=torch.Generator().manual_seed(0), **common)  # fmt: skip

    # Same components, same noise, same conditioning: the two pipelines must agree.
    ours = pipe(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds,
                generator=torch.Generator().manual_seed(0), **common).images  # fmt: skip
    theirs = sdxl(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds,
                  negative_prompt_embeds=torch.zeros_like(embeds.prompt_embeds),
                  negative_pooled_prompt_embeds=torch.zeros_like(embeds.pooled_prompt_embeds),
                  height=height, width=height, generator=torch.Generator().manual_seed(0), **common).images  # fmt: skip
    difference = abs(ours - theirs).max()
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    row = [seconds(fn, args.repeats) / args.batch for fn in (lavit_ids, lavit_embeds, sdxl_embeds)]
    print(
        f"| {size} | {height}px | {params:.2f} M | {row[0]:.4f} | {row[1]:.4f} | {row[2]:.4f} |"
        f"  (max |LaVIT - SDXL| = {difference:.1e})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"steps {args.steps}, batch {args.batch}, guidance {args.guidance}, threads {args.threads}, fp32 CPU\n")
    print(
        "| config | image | UNet params | LaVIT (token ids) s/img | LaVIT (embeds) s/img | SDXL pipeline (embeds) s/img |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        bench_size(size, args)


if __name__ == "__main__":
    main()
