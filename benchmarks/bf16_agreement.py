"""How close half-precision tokens are to float32: keep decisions, token ids and features, on the reference fixture.

    python benchmarks/bf16_agreement.py [--scenes 64]

The fp32 model is the LaVIT tokenizer converted from the reference fixture's checkpoints
(`tests/fixtures/reference/tiny_a`, the weights `tests/test_reference_fixture.py` checks against the original code).
It is saved and loaded back with `from_pretrained(dtype=...)`, the way users load a half-precision model: the token
selector and the quantizer then keep float32 weights (`_keep_in_fp32_modules_strict`). The row marked `.to(dtype)`
casts every weight instead, to show what keeping them in float32 buys. Deterministic selection throughout.

Images: the fixture's 3 images, then `--scenes` synthetic scenes (gvt.data) at the fixture's 112 px, for a larger
sample. Columns:
- keep: share of patches whose keep / drop decision equals float32's.
- ids (both kept): share of patches kept by both whose token id equals float32's.
- same sequence: share of images whose whole id sequence equals float32's.
- ids (fp32 keep): id agreement when both runs are given float32's keep decision (merger and quantizer rounding only).
- feature err: max abs error of the continuous features under float32's keep decision, relative to their max abs.
- encoder err: max abs error of the encoder output, relative to its max abs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from gvt import GVTImageProcessor, GVTVisionTokenizer
from gvt.conversion import build_tokenizer, load_lavit_release
from gvt.data.synthetic_scenes import generate_scene, scene_seed_for

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference" / "tiny_a"


def fixture_tokenizer() -> GVTVisionTokenizer:
    return build_tokenizer(*load_lavit_release(FIXTURE / "original", num_heads=4))


def fixture_images() -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "io.safetensors"))["pixel_values"]


def scene_images(count: int, image_size: int) -> torch.Tensor:
    if count == 0:
        return torch.empty(0, 3, image_size, image_size)
    processor = GVTImageProcessor(size={"height": image_size, "width": image_size})
    images = [generate_scene(scene_seed_for(0, "test", index), image_size).image for index in range(count)]
    return processor(images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def agreement(
    reference: GVTVisionTokenizer, model: GVTVisionTokenizer, pixel_values: torch.Tensor
) -> dict[str, float]:
    """Agreement of `model` (half precision) with `reference` (float32) on `pixel_values`."""
    dtype = model.dtype
    expected = reference(pixel_values)
    actual = model(pixel_values.to(dtype))
    keep_agreement = (actual.keep_mask == expected.keep_mask).float().mean().item()

    # Token ids per patch position (-1 where dropped), to compare patches kept by both runs.
    def ids_per_patch(output):
        ids = torch.full(output.keep_mask.shape, -1, dtype=torch.long)
        ids[output.keep_mask.bool()] = output.token_ids[output.attention_mask.bool()]
        return ids

    both = (actual.keep_mask * expected.keep_mask).bool()
    expected_ids, actual_ids = ids_per_patch(expected), ids_per_patch(actual)
    ids_both = (expected_ids[both] == actual_ids[both]).float().mean().item() if both.any() else float("nan")
    same_sequence = torch.tensor(
        [
            torch.equal(e[m.bool()], a[n.bool()])
            for e, m, a, n in zip(expected.token_ids, expected.attention_mask, actual.token_ids, actual.attention_mask)
        ]
    )

    forced = model(pixel_values.to(dtype), keep_mask=expected.keep_mask)
    real = expected.attention_mask.bool()
    ids_forced = (forced.token_ids[real] == expected.token_ids[real]).float().mean().item() if real.any() else 1.0
    scale = expected.features[real].abs().max().clamp_min(1e-12)
    feature_error = ((forced.features[real].float() - expected.features[real]).abs().max() / scale).item()
    encoder_scale = expected.encoder_hidden_states.abs().max()
    encoder_error = (actual.encoder_hidden_states.float() - expected.encoder_hidden_states).abs().max() / encoder_scale
    return {
        "keep": keep_agreement,
        "ids_both": ids_both,
        "same_sequence": same_sequence.float().mean().item(),
        "ids_forced": ids_forced,
        "feature_error": feature_error,
        "encoder_error": encoder_error.item(),
        "tokens": int(real.sum()),
        "patches": expected.keep_mask.numel(),
    }


def half_precision_variants(reference: GVTVisionTokenizer, folder: str) -> dict[str, GVTVisionTokenizer]:
    variants = {}
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        variants[f"from_pretrained(dtype={name})"] = GVTVisionTokenizer.from_pretrained(folder, dtype=dtype).eval()
        cast = GVTVisionTokenizer.from_pretrained(folder).eval().to(dtype)
        variants[f".to({name}) (all weights)"] = cast
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=64, help="synthetic scenes added to the fixture's 3 images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference = fixture_tokenizer()
    image_sets = {
        "fixture (3 images)": fixture_images(),
        f"scenes ({args.scenes})": scene_images(args.scenes, reference.config.image_size),
    }
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        variants = half_precision_variants(reference, folder)
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    header = (
        "| images | model | keep | ids (both kept) | same sequence | ids (fp32 keep) | feature err | encoder err |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for set_name, pixel_values in image_sets.items():
        if pixel_values.shape[0] == 0:
            continue
        for name, model in variants.items():
            row = agreement(reference, model, pixel_values)
            print(
                f"| {set_name}, {row['tokens']} fp32 tokens | {name} | {row['keep']:.2%} | {row['ids_both']:.2%} | "
                f"{row['same_sequence']:.0%} | {row['ids_forced']:.2%} | {row['feature_error']:.2e} | "
                f"{row['encoder_error']:.2e} |"
            )


if __name__ == "__main__":
    main()
