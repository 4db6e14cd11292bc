"""Convert a GVT checkpoint (EVA-02 encoder + perceiver resampler + LLM projection) into Hugging Face format.

    python conversion_scripts/convert_gvt_to_hf.py --checkpoint gvt.pth --output-dir gvt-hf \
        [--language-model vicuna-7b] [--num-heads 16] [--dtype bf16] [--max-shard-size 2GB] \
        [--verify reference_outputs.safetensors] [--push-to-hub ORG/NAME]

With `--language-model` (a Hugging Face Vicuna/Llama folder): one GVTConfig repo in `"features"` mode (the resampler's
latents enter the LLM through the projection), with processor, generation config, model card and remote code; the
language model is streamed shard by shard. Without it: only the visual tokenizer (a GVTVisionTokenizer folder).

Reads a `.bin`/`.pth` pickle (with `weights_only=True`; a top-level `{"model": ...}` wrapper is unwrapped) or a
`.safetensors` file. Sizes are inferred from tensor shapes; `--num-heads` sets the encoder and resampler heads.
The output is staged beside `--output-dir` and renamed into place; `--output-dir` must be absent or empty unless
`--overwrite` (which replaces an earlier conversion there and keeps other files), and must not overlap the inputs.
"""

from __future__ import annotations

import argparse
import sys

from gvt.atomic_write import check_output_dir
from gvt.conversion import build_tokenizer, convert_gvt_tokenizer, load_state_dict_file, save_atomically

ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the GVT checkpoint file")
    parser.add_argument("--output-dir", required=True, help="where to write the converted model (absent or empty)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier conversion in --output-dir (other files in the folder are kept)",
    )
    parser.add_argument("--language-model", default=None, help="Hugging Face folder of the Vicuna/Llama LLM")
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads of the encoder and resampler")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="cast weights (default: keep)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest output shard, e.g. 2GB or 500MB")
    parser.add_argument("--repo-id", default=None, help="repo id used in the model card (default: --push-to-hub)")
    parser.add_argument("--no-model-card", action="store_true", help="do not write README.md")
    parser.add_argument("--verify", default=None, help="a .safetensors of reference inputs/outputs to compare with")
    parser.add_argument("--verify-atol", type=float, default=1e-4, help="max abs error accepted by --verify")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="upload the result to this Hub repo")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.language_model is None:
        if args.verify or args.push_to_hub:
            print("error: --verify and --push-to-hub need the full repo (--language-model)", file=sys.stderr)
            return 2
        try:
            check_output_dir(args.output_dir, args.overwrite, inputs=[args.checkpoint])
            config, state_dict = convert_gvt_tokenizer(load_state_dict_file(args.checkpoint), num_heads=args.num_heads)
            model = build_tokenizer(config, state_dict)
            output = save_atomically(model, args.output_dir, overwrite=args.overwrite, inputs=[args.checkpoint])
        except ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        num_parameters = sum(p.numel() for p in model.parameters())
        print(f"Wrote GVTVisionTokenizer (GVT, {num_parameters / 1e6:.2f} M parameters) to {output}")
        return 0

    from gvt.release_conversion import convert_gvt_release, verify_and_push

    repo_id = args.repo_id or args.push_to_hub or f"gvt-community/{args.output_dir.rstrip('/').split('/')[-1]}"
    card = None if args.no_model_card else {"repo_id": repo_id, "kind": "gvt"}
    try:
        summary = convert_gvt_release(
            args.checkpoint,
            args.language_model,
            args.output_dir,
            num_heads=args.num_heads,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            model_card=card,
            overwrite=args.overwrite,
        )
    except ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"Wrote GVT (features mode, {summary.num_parameters / 1e6:.2f} M parameters, {len(summary.shards)} shard(s)) "
        f"to {args.output_dir}"
    )
    return verify_and_push(args.output_dir, args.verify, args.verify_atol, args.push_to_hub)


if __name__ == "__main__":
    sys.exit(main())
