"""Training-step throughput and peak memory of LaVITForCausalLM under `transformers.Trainer`-style steps:
frozen tokenizer (LLM training, ETT stage 1) vs ETT stage 2 (tokenizer + LLM + projector, joint loss).

    python benchmarks/bench_train.py [--sizes tiny mid] [--steps 5] [--batch-size 4]

Prints a table: samples/s over timed steps (after one warm-up step) and peak memory (CUDA: max allocated; CPU: the
process's peak resident set, which only grows: read it per size, run sizes separately for clean numbers).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from transformers import TrainerState

from gvt.data import build_synthetic_dataset, to_caption_rows
from gvt.tiny_random import build_tiny_random
from gvt.training.collator import GVTDataCollator
from gvt.training.ett import ETTCallback, ett_parameter_groups, prepare_ett_model

SIZES = {
    "tiny": {"vision_config": {"decoder_output_dim": 64}},
    "mid": {
        "vision_config": {
            "image_size": 224,
            "hidden_size": 256,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "intermediate_size": 1024,
            "merger_num_layers": 4,
            "merger_num_attention_heads": 8,
            "merger_intermediate_size": 1024,
            "decoder_hidden_size": 256,
            "decoder_num_layers": 4,
            "decoder_num_attention_heads": 8,
            "decoder_intermediate_size": 1024,
            "decoder_output_dim": 256,
            "decoder_num_queries": 256,
            "decoder_max_positions": 256,
            "projection_dim": 512,
        },
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 1376,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
        },
    },
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(size: str, stage: int, steps: int, batch_size: int, device: torch.device) -> dict:
    model, processor = build_tiny_random("codebook", seed=0, **SIZES[size])
    model.to(device)
    callback = ETTCallback(unfreeze_step=0 if stage == 2 else 10**9)
    prepare_ett_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    callback._groups = ett_parameter_groups(model)
    callback._apply(model, TrainerState(), stage)  # what on_train_begin does, without a Trainer
    image_size = model.config.vision_config.image_size
    rows = to_caption_rows(build_synthetic_dataset(batch_size, 0, 0, image_size=image_size)["train"])
    batch = {k: v.to(device) for k, v in GVTDataCollator(processor)(list(rows)).items()}
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    seconds = sum(timings[1:]) / steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "size": size,
        "stage": "ETT stage 2" if stage == 2 else "stage 1 (frozen tok)",
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_M": trainable / 1e6,
        "samples_per_s": batch_size / seconds,
        "peak_MB": peak_memory_mb(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, batch {args.batch_size}, {args.steps} timed steps, torch threads {torch.get_num_threads()}"
    )
    print(f"{'size':<6} {'stage':<20} {'params M':>9} {'trainable M':>12} {'samples/s':>10} {'peak MB':>9}")
    for size in args.sizes:
        for stage in (1, 2):
            r = bench(size, stage, args.steps, args.batch_size, device)
            print(
                f"{r['size']:<6} {r['stage']:<20} {r['params_M']:>9.2f} {r['trainable_M']:>12.2f} "
                f"{r['samples_per_s']:>10.2f} {r['peak_MB']:>9.0f}"
            )


if __name__ == "__main__":
    main()
