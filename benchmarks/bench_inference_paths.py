"""`tokenize` and `encode_features` against the full forward they used to run (and, with `--bfloat16`, tokenize in
bfloat16 against float32), interleaved in one process.

    python benchmarks/bench_inference_paths.py [--threads 1] [--rounds 7] [--batches 1 8]

Mid-size LaVIT tokenizer (as `bench_tokenizer.py`), random weights, float32. Baselines: `model(pixel_values)` under
`no_grad` (what `tokenize` ran before: it also computed the LLM projection) and the same forward with gradients
tracked (what `encode_features` ran before: it also searched the codebook). Each round times baseline and candidate
back to back in alternating order; the table gives medians and the median of the paired ratios. Outputs are checked
equal (ids exactly, features to 1e-6) before timing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from bench_tokenizer import MID_SIZE

from gvt import GVTVisionConfig, GVTVisionTokenizer


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bfloat16_copy(model: GVTVisionTokenizer) -> GVTVisionTokenizer:
    """The model as `from_pretrained(..., dtype=torch.bfloat16)` loads it (selector and quantizer stay float32)."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return GVTVisionTokenizer.from_pretrained(folder, dtype=torch.bfloat16).eval()


def token_agreement(expected, actual) -> str:
    """Keep decisions equal, and ids equal where both runs kept the patch."""
    keep = (expected.keep_mask == actual.keep_mask).float().mean().item()
    both = (expected.keep_mask * actual.keep_mask).bool()

    def ids_per_patch(output):
        ids = torch.full(output.keep_mask.shape, -1, dtype=torch.long)
        ids[output.keep_mask.bool()] = output.token_ids[output.attention_mask.bool()]
        return ids

    same = (ids_per_patch(expected)[both] == ids_per_patch(actual)[both]).float().mean().item()
    return f"keep {keep:.1%}, ids {same:.1%}"


def interleaved(baseline, candidate, rounds: int) -> tuple[float, float, float]:
    """Median baseline and candidate seconds, and the median of the paired baseline / candidate ratios."""
    baseline(), candidate()  # warm-up
    pairs = []
    for round_index in range(rounds):
        if round_index % 2:
            b, c = seconds(baseline), seconds(candidate)
        else:
            c, b = seconds(candidate), seconds(baseline)
        pairs.append((b, c))
    return (
        statistics.median(b for b, _ in pairs),
        statistics.median(c for _, c in pairs),
        statistics.median(b / c for b, c in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--bfloat16",
        action="store_true",
        help="also time tokenize in bfloat16 against float32 (the fast path on CPUs with bf16 matrix units and on "
        "accelerators; slow without them) and print its keep / id agreement",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", **MID_SIZE)).eval()
    images = torch.randn(max(args.batches), 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def full_forward_no_grad(pixels):
        with torch.no_grad():
            return model(pixels)

    print(f"GVTVisionTokenizer mid-size, float32, {args.threads} thread(s), {args.rounds} interleaved rounds")
    print("| path | batch | before ms | now ms | speed-up (median of paired ratios) |")
    print("|---|---:|---:|---:|---:|")
    for batch in args.batches:
        pixels = images[:batch]
        full = full_forward_no_grad(pixels)
        tokens = model.tokenize(pixels)
        features = model.encode_features(pixels)
        assert torch.equal(tokens.token_ids, full.token_ids) and torch.equal(tokens.keep_mask, full.keep_mask)
        torch.testing.assert_close(features.features, full.features, rtol=0, atol=1e-6)
        rows = {
            "ids (`tokenize`)": (
                lambda pixels=pixels: full_forward_no_grad(pixels),
                lambda pixels=pixels: model.tokenize(pixels),
            ),
            "features (`encode_features`)": (
                lambda pixels=pixels: model(pixels),
                lambda pixels=pixels: model.encode_features(pixels),
            ),
        }
        for name, (baseline, candidate) in rows.items():
            before, now, ratio = interleaved(baseline, candidate, args.rounds)
            print(f"| {name} | {batch} | {1e3 * before:.1f} | {1e3 * now:.1f} | {ratio:.2f}x |")

        if args.bfloat16:
            half = bfloat16_copy(model)
            half_pixels = pixels.to(torch.bfloat16)
            agreement = token_agreement(tokens, half.tokenize(half_pixels))
            before, now, ratio = interleaved(
                lambda pixels=pixels: model.tokenize(pixels),
                lambda half=half, half_pixels=half_pixels: half.tokenize(half_pixels),
                args.rounds,
            )
            print(
                f"| ids in bfloat16 (before: float32; {agreement}) | {batch} | {1e3 * before:.1f} | {1e3 * now:.1f} "
                f"| {ratio:.2f}x |"
            )


if __name__ == "__main__":
    main()
