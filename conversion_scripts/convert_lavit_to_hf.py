"""Convert a local copy of the LaVIT-7B-v2 release into Hugging Face format.

    python conversion_scripts/convert_lavit_to_hf.py --input-dir LaVIT-7B-v2 --output-dir lavit-hf \
        --vision-tokenizer-only [--num-heads 16] [--understanding] [--no-decoders]

Reads `visual_tokenizer/{eva_vitg_psz14,tokenizer_encoder,highres_tokenizer_decoder,tokenizer_decoder}` and, with
`--understanding`, `language_model/visual_weight`, as `.bin` (loaded with `weights_only=True`) or `.safetensors`.
Every size is inferred from tensor shapes; head counts come from `--num-heads`. Unknown or missing keys abort the
conversion with a message listing them, and nothing is written unless the whole conversion succeeds.
"""

from __future__ import annotations

import argparse
import sys

from gvt.conversion import build_tokenizer, load_lavit_release, save_atomically


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-dir", required=True, help="local folder of the LaVIT release")
    parser.add_argument("--output-dir", required=True, help="where to write the converted model")
    parser.add_argument(
        "--vision-tokenizer-only",
        action="store_true",
        help="convert only the visual tokenizer (GVTVisionTokenizer); the language model is not converted",
    )
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads of the encoder, merger, decoders")
    parser.add_argument(
        "--understanding", action="store_true", help="apply language_model/visual_weight (continuous understanding)"
    )
    parser.add_argument("--no-decoders", action="store_true", help="skip the feature decoders")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.vision_tokenizer_only:
        print(
            "error: only --vision-tokenizer-only is supported by this version of the script "
            "(the language model conversion is tracked separately).",
            file=sys.stderr,
        )
        return 2
    try:
        config, state_dict = load_lavit_release(
            args.input_dir, understanding=args.understanding, num_heads=args.num_heads, decoders=not args.no_decoders
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model = build_tokenizer(config, state_dict)
    output = save_atomically(model, args.output_dir)
    num_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"Wrote GVTVisionTokenizer ({num_parameters / 1e6:.2f} M parameters, decoders: {config.decoder_types or 'none'}) "
        f"to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
