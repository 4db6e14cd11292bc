"""Does tokenizer training work? Train a tiny LaVIT tokenizer (LaVIT stage 1) on synthetic scenes on the CPU.

    python benchmarks/train_tokenizer_report.py --steps 300
    python benchmarks/train_tokenizer_report.py --steps 300 --supervised

1. No pretrained encoder exists offline: pretrain the encoder on per-patch labels of the scenes (which shape /
   colour covers each patch; `gvt.data.patch_labels`) with a linear head.
2. Freeze it and train selector, merger, quantizer and the highres feature decoder with `train_tokenizer`.

`--supervised` adds the optional fine-grained supervision of `gvt.training.tokenizer_training` with the targets of
`gvt.data.patch_targets` (as the embedded default model's recipe does): the encoder pretrains on "covered by class
c" / "anchor (box centre) of class c" labels, the selector learns the anchor patches as keep targets
(`--selector-supervision-weight`, `--keep-target-positive-weight`, teacher-forced selection unless
`--no-teacher-forcing`), a linear probe on the kept codes learns each patch's class (`--code-classification-weight`),
and the keep-ratio target defaults to the anchors' share with the keep-ratio penalty off.

Prints the reconstruction loss (1 - cos to the frozen encoder's patch features) next to the mean-feature baseline
(predicting the training-set mean patch feature everywhere), the keep ratio against its target and the codebook usage
share and perplexity at steps 0, 25%, 50%, 75% and 100%, on held-out scenes (deterministic and sampled selection) and
on the training batches (sampled selection, mean of the last `--window` steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.data import (
    NUM_PATCH_CLASSES,
    NUM_PRETRAIN_CLASSES,
    build_synthetic_dataset,
    dataset_patch_targets,
    patch_labels,
)
from gvt.image_processing_gvt import GVTImageProcessor
from gvt.training.losses import feature_reconstruction_loss
from gvt.training.tokenizer_training import evaluate_tokenizer, pretrain_encoder_on_patch_labels, train_tokenizer


def load_scenes(num_train: int, num_eval: int, image_size: int, patch_size: int, seed: int):
    """(pixels, targets, coverage) of the train and held-out splits; targets: `ScenePatchTargets` of
    `gvt.data.patch_targets` (keep = anchor patches, code_labels, pretrain_labels), plus `coverage`, the class
    covering each patch (`gvt.data.patch_labels`; code_labels off the anchors)."""
    dataset = build_synthetic_dataset(num_train, num_eval, 0, image_size=image_size, seed=seed)
    processor = GVTImageProcessor(size={"height": image_size, "width": image_size})

    def tensors(split):
        pixels = processor(list(split["image"]), return_tensors="pt")["pixel_values"]
        coverage = torch.stack(
            [
                torch.from_numpy(patch_labels(objects, image_size, patch_size, text_bbox or None))
                for objects, text_bbox in zip(split["objects"], split["text_bbox"])
            ]
        )
        return pixels, dataset_patch_targets(split, image_size, patch_size), coverage

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
    parser.add_argument(
        "--target-keep-ratio", type=float, default=None, help="default 0.4, with --supervised the anchors' share"
    )
    parser.add_argument("--keep-ratio-weight", type=float, default=None, help="default 5.0, with --supervised 0")
    parser.add_argument("--selector-entropy-weight", type=float, default=None, help="default 0.2, with --supervised 0")
    parser.add_argument("--supervised", action="store_true", help="anchor keep targets + code class labels")
    parser.add_argument("--selector-supervision-weight", type=float, default=1.0)
    parser.add_argument("--keep-target-positive-weight", type=float, default=1.25)
    parser.add_argument("--code-classification-weight", type=float, default=2.0)
    parser.add_argument("--no-teacher-forcing", action="store_true", help="with --supervised: sampled selection")
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--dead-code-threshold", type=int, default=20)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.target_keep_ratio is None and not args.supervised:
        args.target_keep_ratio = 0.4
    if args.keep_ratio_weight is None:
        args.keep_ratio_weight = 0.0 if args.supervised else 5.0
    if args.selector_entropy_weight is None:
        args.selector_entropy_weight = 0.0 if args.supervised else 0.2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    config = GVTVisionConfig.from_preset(
        "tiny", decoder_output_dim=64, decoder_types=["highres"], codebook_size=args.codebook_size
    )
    model = GVTVisionTokenizer(config)
    (train_pixels, train_targets, train_coverage), (eval_pixels, eval_targets, _) = load_scenes(
        args.train_images, args.eval_images, config.image_size, config.patch_size, args.seed
    )
    anchor_share = float(train_targets.keep.mean())
    if args.target_keep_ratio is None:
        args.target_keep_ratio = anchor_share
    print(
        f"{args.train_images} train / {args.eval_images} held-out scenes at {config.image_size}px, "
        f"{config.num_patches} patches, codebook {config.codebook_size} x {config.codebook_dim}, anchors "
        f"{train_targets.keep.sum(1).mean():.2f} per image (share {anchor_share:.3f}) "
        f"({time.perf_counter() - start:.1f}s)"
    )
    if args.supervised:
        print(
            f"objective: supervised (selector {args.selector_supervision_weight}, positives x "
            f"{args.keep_target_positive_weight}, teacher forcing {not args.no_teacher_forcing}, code classes "
            f"{args.code_classification_weight}), keep-ratio penalty {args.keep_ratio_weight}, entropy "
            f"{args.selector_entropy_weight}"
        )
    else:
        print(
            f"objective: plain LaVIT, keep-ratio penalty {args.keep_ratio_weight}, entropy "
            f"{args.selector_entropy_weight}"
        )

    pretraining = pretrain_encoder_on_patch_labels(
        model,
        train_pixels,
        torch.from_numpy(train_targets.pretrain_labels) if args.supervised else train_coverage,
        num_steps=args.pretrain_steps,
        batch_size=32,
        num_classes=NUM_PRETRAIN_CLASSES if args.supervised else NUM_PATCH_CLASSES,
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

    eval_anchors = torch.from_numpy(eval_targets.keep).bool()

    @torch.no_grad()
    def anchor_recall_precision() -> tuple[float, float]:
        """Held-out deterministic selection against the anchor patches (the supervised keep targets)."""
        modes = {module: module.training for module in model.modules()}
        model.eval()
        kept = torch.cat([model(eval_pixels[i : i + 16]).keep_mask.bool() for i in range(0, len(eval_pixels), 16)])
        for module, mode in modes.items():
            module.training = mode
        hits = int((kept & eval_anchors).sum())
        return hits / max(int(eval_anchors.sum()), 1), hits / max(int(kept.sum()), 1)

    def evaluate(step: int) -> None:
        evaluations[step] = (
            evaluate_tokenizer(model, eval_pixels),
            evaluate_tokenizer(model, eval_pixels, selection="sample", seed=args.seed),
            anchor_recall_precision(),
        )

    def on_step(step: int, history) -> None:
        if step in checkpoints:
            evaluate(step)

    evaluate(0)

    supervision = {}
    if args.supervised:
        supervision = dict(
            keep_targets=torch.from_numpy(train_targets.keep),
            selector_supervision_weight=args.selector_supervision_weight,
            keep_target_positive_weight=args.keep_target_positive_weight,
            teacher_forced_selection=not args.no_teacher_forcing,
            code_labels=torch.from_numpy(train_targets.code_labels),
            code_classification_weight=args.code_classification_weight,
            num_code_classes=NUM_PATCH_CLASSES,
        )
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
        **supervision,
    )
    print(f"tokenizer training: {args.steps} steps ({time.perf_counter() - start:.1f}s)\n")

    print(
        f"target keep ratio {args.target_keep_ratio:.3f}. Held-out: {args.eval_images} scenes, det = deterministic "
        "selection (p_keep >= 0.5), smp = sampled selection (LaVIT's inference). Train: sampled (teacher-forced "
        f"with --supervised), mean of the last {args.window} steps; usage = codes used in the last "
        f"{history.usage_window} steps. base = mean-feature baseline (held-out 1 - cos to the training-set mean "
        "patch feature); anchor rec / prec = held-out det selection vs the anchor patches."
    )
    print(f"Reconstruction floor of a constant (the training-set mean patch feature): {mean_baseline:.4f}\n")
    header = (
        f"{'step':>5} | {'recon det':>9} {'recon smp':>9} {'base':>6} {'recon train':>11} | {'keep det':>8} "
        f"{'keep smp':>8} {'target':>6} {'keep train':>10} {'p_keep':>6} {'anchor rec/prec':>15} | "
        f"{'usage det':>9} {'ppl det':>7} {'usage smp':>9} {'ppl smp':>7} {'usage train':>11} {'restarts':>8}"
        + (f" | {'code acc':>8}" if args.supervised else "")
    )
    print(header)
    print("-" * len(header))
    for step in [0, *checkpoints]:
        det, smp, (recall, precision) = evaluations[step]
        if step == 0:
            recon_train = keep_train = p_keep = usage_train = restarts = code_acc = "-"
        else:
            recon_train = f"{mean_last(history.reconstruction, step, args.window):.4f}"
            keep_train = f"{mean_last(history.hard_keep_ratio, step, args.window):.3f}"
            p_keep = f"{mean_last(history.keep_ratio, step, args.window):.3f}"
            usage_train = f"{history.codebook_usage[step - 1]:.3f}"
            restarts = str(sum(history.restarted_codes[:step]))
            code_acc = f"{mean_last(history.code_accuracy, step, args.window):.3f}"
        anchors = f"{recall:.2f}/{precision:.2f}"
        print(
            f"{step:>5} | {det.reconstruction:>9.4f} {smp.reconstruction:>9.4f} {mean_baseline:>6.4f} "
            f"{recon_train:>11} | {det.keep_ratio:>8.3f} {smp.keep_ratio:>8.3f} {args.target_keep_ratio:>6.3f} "
            f"{keep_train:>10} {p_keep:>6} {anchors:>15} | {det.codebook_usage:>9.3f} {det.perplexity:>7.1f} "
            f"{smp.codebook_usage:>9.3f} {smp.perplexity:>7.1f} {usage_train:>11} {restarts:>8}"
            + (f" | {code_acc:>8}" if args.supervised else "")
        )
    print(f"\ntotal {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
