"""Convert a local copy of the LaVIT-7B-v2 release into one Hub-ready Hugging Face repo.

    python conversion_scripts/convert_lavit_to_hf.py --input-dir LaVIT-7B-v2 --output-dir lavit-hf \
        [--understanding] [--dtype bf16|fp16|fp32] [--max-shard-size 2GB] [--num-heads 16] [--no-decoders] \
        [--verify reference_outputs.safetensors] [--push-to-hub ORG/NAME]

Default (full) mode: `config.json` (GVTConfig + `auto_map` and remote code), sharded safetensors (the language model
streamed shard by shard), the processor with the extended Llama tokenizer, `generation_config.json` and
`image_generation_config.json` (the reference's captioning and text-to-image defaults), the diffusers decoder
pipelines in `decoder/` and `decoder_lowres/`, a model card and `conversion_provenance.json`. `--understanding`
applies `language_model/visual_weight` and feeds the LLM continuous features (the release's understanding model).

`--vision-tokenizer-only` converts only the visual tokenizer (`visual_tokenizer/*`, `language_model/visual_weight`
with `--understanding`) into a GVTVisionTokenizer folder.

Pickles are read with `weights_only=True`; every size is inferred from tensor shapes (head counts from
`--num-heads`); unknown or missing tensors abort the conversion with a message naming them, and nothing is written
unless the whole conversion succeeds: the output is staged beside `--output-dir` and renamed into place (a killed run
leaves the old output or the new one; the next run cleans its leftovers). `--output-dir` must be absent or empty
unless `--overwrite` (which replaces an earlier conversion there and keeps other files), and must not be, be inside
or contain the input folder. `--verify FILE` runs the converted model on the inputs recorded in FILE (a
`.safetensors` of outputs of the original code) and prints the max errors (exit status 3 if any exceeds
`--verify-atol`).
"""

from __future__ import annotations

import argparse
import sys

from gvt.atomic_write import check_output_dir
from gvt.conversion import build_tokenizer, load_lavit_release, save_atomically

ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", required=True, help="local folder of the LaVIT release")
    parser.add_argument("--output-dir", required=True, help="where to write the converted model (absent or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier conversion in --output-dir (other files in the folder are kept)",
    )
    parser.add_argument(
        "--vision-tokenizer-only",
        action="store_true",
        help="convert only the visual tokenizer (GVTVisionTokenizer); the language model is not converted",
    )
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads of the encoder, merger, decoders")
    parser.add_argument(
        "--understanding", action="store_true", help="apply language_model/visual_weight (continuous understanding)"
    )
    parser.add_argument("--no-decoders", action="store_true", help="skip the feature decoders and diffusion decoders")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="cast weights (default: keep)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest output shard, e.g. 2GB or 500MB")
    parser.add_argument("--repo-id", default=None, help="repo id used in the model card (default: --push-to-hub)")
    parser.add_argument("--no-model-card", action="store_true", help="do not write README.md")
    parser.add_argument("--verify", default=None, help="a .safetensors of reference inputs/outputs to compare with")
    parser.add_argument("--verify-atol", type=float, default=1e-4, help="max abs error accepted by --verify")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="upload the result to this Hub repo")
    return parser.parse_args(argv)


def convert_tokenizer_only(args) -> int:
    try:
        check_output_dir(args.output_dir, args.overwrite, inputs=[args.input_dir])
        config, state_dict = load_lavit_release(
            args.input_dir, understanding=args.understanding, num_heads=args.num_heads, decoders=not args.no_decoders
        )
        model = build_tokenizer(config, state_dict)
        output = save_atomically(model, args.output_dir, overwrite=args.overwrite, inputs=[args.input_dir])
    except ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    num_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"Wrote GVTVisionTokenizer ({num_parameters / 1e6:.2f} M parameters, decoders: {config.decoder_types or 'none'}) "
        f"to {output}"
    )
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.vision_tokenizer_only:
        return convert_tokenizer_only(args)
    from gvt.release_conversion import convert_lavit_release, verify_and_push

    repo_id = args.repo_id or args.push_to_hub or f"gvt-community/{args.output_dir.rstrip('/').split('/')[-1]}"
    card = None if args.no_model_card else {"repo_id": repo_id, "kind": "lavit"}
    try:
        summary = convert_lavit_release(
            args.input_dir,
            args.output_dir,
            understanding=args.understanding,
            num_heads=args.num_heads,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            decoders=not args.no_decoders,
            model_card=card,
            overwrite=args.overwrite,
        )
    except ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote LaVIT ({summary.image_input_mode} mode, {summary.num_parameters / 1e6:.2f} M parameters, "
        f"{len(summary.shards)} shard(s), decoders: {summary.decoders or 'none'}) to {args.output_dir}"
    )
    return verify_and_push(args.output_dir, args.verify, args.verify_atol, args.push_to_hub)


if __name__ == "__main__":
    sys.exit(main())
