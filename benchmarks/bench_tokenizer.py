"""Throughput of `GVTVisionTokenizer.tokenize`: batched vs image by image, and achieved GFLOP/s vs a plain matmul.

    python benchmarks/bench_tokenizer.py [--threads 2] [--repeats 3]

Mid-size LaVIT tokenizer (width 384, 12 encoder blocks, 4 merger blocks, 224 px, 256 patches, 16384 codes), random
weights, fp32 on CPU. The baseline is the same model run image by image in the same process; the roofline is a plain
fp32 matmul of comparable size measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gvt import GVTVisionConfig, GVTVisionTokenizer

MID_SIZE = dict(
    image_size=224,
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    intermediate_size=1536,
    merger_num_layers=4,
    merger_num_attention_heads=6,
    merger_intermediate_size=1536,
    codebook_size=16384,
    codebook_dim=32,
    projection_dim=512,
    decoder_types=[],
)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = best_time(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", **MID_SIZE)).eval()
    images = torch.randn(max(args.batches), 3, 224, 224, generator=torch.Generator().manual_seed(0))

    with FlopCounterMode(display=False) as counter:
        model.tokenize(images[:1])
    flops_per_image = counter.get_total_flops()
    peak = matmul_gflops(args.repeats)

    print(
        f"GVTVisionTokenizer mid-size ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
        f"{args.threads} threads, {flops_per_image / 1e9:.2f} GFLOP per image; plain matmul: {peak:.1f} GFLOP/s"
    )
    print("| batch | batched img/s | image-by-image img/s | speed-up | batched GFLOP/s | % of matmul |")
    print("|------:|--------------:|---------------------:|---------:|----------------:|------------:|")
    for batch in args.batches:
        chunk = images[:batch]
        batched = best_time(lambda chunk=chunk: model.tokenize(chunk), args.repeats)
        looped = best_time(lambda chunk=chunk: [model.tokenize(image[None]) for image in chunk], args.repeats)
        gflops = flops_per_image * batch / batched / 1e9
        print(
            f"| {batch:5d} | {batch / batched:13.2f} | {batch / looped:20.2f} | {looped / batched:7.2f}x "
            f"| {gflops:15.1f} | {100 * gflops / peak:10.0f}% |"
        )


if __name__ == "__main__":
    main()
