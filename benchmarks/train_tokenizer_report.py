"""Does tokenizer training work? Train a tiny LaVIT tokenizer (LaVIT stage 1) on synthetic scenes on the CPU.

    python benchmarks/train_tokenizer_report.py --steps 300

1. No pretrained encoder exists offline: pretrain the encoder on per-patch labels of the scenes (which shape /
   colour covers each patch; `gvt.data.patch_labels`) with a linear head.
2. Freeze it and train selector, merger, quantizer and the highres feature decoder with `train_tokenizer`.

Prints the reconstruction loss (1 - cos to the frozen encoder's patch features), the keep ratio against its target
and the codebook usage share at steps 0, 25%, 50%, 75% and 100%, on held-out scenes (deterministic selection) and on
the training batches (sampled selection, mean of the last `--window` steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.data import build_synthetic_dataset, patch_labels
from gvt.image_processing_gvt import GVTImageProcessor
from gvt.training.losses import feature_reconstruction_loss
from gvt.training.tokenizer_training import evaluate_tokenizer, pretrain_encoder_on_patch_labels, train_tokenizer


def load_scenes(num_train: int, num_eval: int, image_size: int, patch_size: int, seed: int):
    dataset = build_synthetic_dataset(num_train, num_eval, 0, image_size=image_size, seed=seed)
    processor = GVTImageProcessor(size={"height": image_size, "width": image_size})

    def tensors(split):
        pixels = processor(list(split["image"]), return_tensors="pt")["pixel_values"]
        labels = torch.stack(
            [
                torch.from_numpy(patch_labels(objects, image_size, patch_size, text_bbox or None))
                for objects, text_bbox in zip(split["objects"], split["text_bbox"])
            ]
        )
        return pixels, labels

    return tensors(dataset["train"]), tensors(dataset["validation"])


def mean_last(values: list[float], step: int, window: int) -> float:
    chunk = values[max(0, step - window) : step]
    return sum(chunk) / len(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=320)
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--target-keep-ratio", type=float, default=0.4)
    parser.add_argument("--keep-ratio-weight", type=float, default=5.0)
    parser.add_argument("--selector-entropy-weight", type=float, default=0.2)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--dead-code-threshold", type=int, default=20)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    config = GVTVisionConfig.from_preset(
        "tiny", decoder_output_dim=64, decoder_types=["highres"], codebook_size=args.codebook_size
    )
    model = GVTVisionTokenizer(config)
    (train_pixels, train_labels), (eval_pixels, _) = load_scenes(
        args.train_images, args.eval_images, config.image_size, config.patch_size, args.seed
    )
    print(
        f"{args.train_images} train / {args.eval_images} held-out scenes at {config.image_size}px, "
        f"{config.num_patches} patches, codebook {config.codebook_size} x {config.codebook_dim} "
        f"({time.perf_counter() - start:.1f}s)"
    )

    pretraining = pretrain_encoder_on_patch_labels(
        model,
        train_pixels,
        train_labels,
        num_steps=args.pretrain_steps,
        batch_size=32,
        seed=args.seed,
        progress_bar=False,
    )
    head_accuracy = sum(pretraining.accuracies[-20:]) / len(pretraining.accuracies[-20:])
    print(
        f"encoder patch-label pretraining: {args.pretrain_steps} steps, loss {pretraining.losses[0]:.3f} -> "
        f"{pretraining.losses[-1]:.3f}, patch accuracy (last 20 steps) {head_accuracy:.3f} "
        f"({time.perf_counter() - start:.1f}s)"
    )

    with torch.no_grad():
        train_mean = model.encoder(train_pixels)[:, 1:].mean(dim=(0, 1))
        held_out = model.encoder(eval_pixels)[:, 1:]
    mean_baseline = float(feature_reconstruction_loss(train_mean.expand_as(held_out), held_out))
    checkpoints = sorted({round(args.steps * fraction) for fraction in (0.25, 0.5, 0.75, 1.0)})
    evaluations = {}

    def evaluate(step: int) -> None:
        evaluations[step] = (
            evaluate_tokenizer(model, eval_pixels),
            evaluate_tokenizer(model, eval_pixels, selection="sample", seed=args.seed),
        )

    def on_step(step: int, history) -> None:
        if step in checkpoints:
            evaluate(step)

    evaluate(0)

    history = train_tokenizer(
        model,
        train_pixels,
        num_steps=args.steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        target_keep_ratio=args.target_keep_ratio,
        dead_code_threshold=args.dead_code_threshold,
        keep_ratio_weight=args.keep_ratio_weight,
        selector_entropy_weight=args.selector_entropy_weight,
        seed=args.seed,
        progress_bar=False,
        callback=on_step,
    )
    print(f"tokenizer training: {args.steps} steps ({time.perf_counter() - start:.1f}s)\n")

    print(
        f"target keep ratio {args.target_keep_ratio}. Held-out: {args.eval_images} scenes, det = deterministic "
        "selection (p_keep >= 0.5), smp = sampled selection (LaVIT's inference). Train: sampled, mean of the last "
        f"{args.window} steps; usage = codes used in the last {history.usage_window} steps."
    )
    print(f"Reconstruction floor of a constant (the training-set mean patch feature): {mean_baseline:.4f}\n")
    header = (
        f"{'step':>5} | {'recon det':>9} {'recon smp':>9} {'recon train':>11} | {'keep det':>8} {'keep smp':>8} "
        f"{'keep train':>10} {'p_keep':>6} | {'usage det':>9} {'usage smp':>9} {'usage train':>11} "
        f"{'ppl smp':>7} {'restarts':>8}"
    )
    print(header)
    print("-" * len(header))
    for step in [0, *checkpoints]:
        det, smp = evaluations[step]
        if step == 0:
            recon_train = keep_train = p_keep = usage_train = restarts = "-"
        else:
            recon_train = f"{mean_last(history.reconstruction, step, args.window):.4f}"
            keep_train = f"{mean_last(history.hard_keep_ratio, step, args.window):.3f}"
            p_keep = f"{mean_last(history.keep_ratio, step, args.window):.3f}"
            usage_train = f"{history.codebook_usage[step - 1]:.3f}"
            restarts = str(sum(history.restarted_codes[:step]))
        print(
            f"{step:>5} | {det.reconstruction:>9.4f} {smp.reconstruction:>9.4f} {recon_train:>11} | "
            f"{det.keep_ratio:>8.3f} {smp.keep_ratio:>8.3f} {keep_train:>10} {p_keep:>6} | "
            f"{det.codebook_usage:>9.3f} {smp.codebook_usage:>9.3f} {usage_train:>11} {smp.perplexity:>7.1f} "
            f"{restarts:>8}"
        )
    print(f"\ntotal {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
