"""Convert a GVT checkpoint (EVA-02 encoder + perceiver resampler + LLM projection) into Hugging Face format.

    python conversion_scripts/convert_gvt_to_hf.py --checkpoint gvt.pth --output-dir gvt-hf [--num-heads 16]

Reads a `.bin`/`.pth` pickle (with `weights_only=True`; a top-level `{"model": ...}` wrapper is unwrapped) or a
`.safetensors` file. Sizes are inferred from tensor shapes; `--num-heads` sets the encoder and resampler heads.
"""

from __future__ import annotations

import argparse
import sys

from gvt.conversion import build_tokenizer, convert_gvt_tokenizer, load_state_dict_file, save_atomically


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the GVT checkpoint file")
    parser.add_argument("--output-dir", required=True, help="where to write the converted model")
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads of the encoder and resampler")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config, state_dict = convert_gvt_tokenizer(load_state_dict_file(args.checkpoint), num_heads=args.num_heads)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model = build_tokenizer(config, state_dict)
    output = save_atomically(model, args.output_dir)
    num_parameters = sum(p.numel() for p in model.parameters())
    print(f"Wrote GVTVisionTokenizer (GVT, {num_parameters / 1e6:.2f} M parameters) to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
