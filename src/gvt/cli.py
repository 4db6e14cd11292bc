"""The `gvt` command line: argument parsing only; the work is done by library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str):
    """Register `configure(parser)` / `run(args)` pairs as a subcommand."""

    def wrap(configure):
        def attach(run):
            COMMANDS[name] = (help_text, configure, run)
            return run

        return attach

    return wrap


# --------------------------------------------------------------------------------------------------------------------
# gvt tokenize
# --------------------------------------------------------------------------------------------------------------------


def _configure_tokenize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default=None, help="a GVTVisionTokenizer folder or Hub id (default: tiny random)")
    parser.add_argument("--selection", choices=["deterministic", "sample"], default="deterministic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("tokenize", "turn images into dynamic-length visual token ids")(_configure_tokenize)
def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenize_images import load_tokenizer_and_processor, tokenize_files

    tokenizer, processor = load_tokenizer_and_processor(args.model, seed=args.seed)
    results = tokenize_files(
        tokenizer, processor, args.images, selection=args.selection, seed=args.seed, max_tokens=args.max_tokens
    )
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for item in results:
            print(f"{item['image']}: {item['num_tokens']} tokens of {item['num_patches']} patches")
            print("  " + " ".join(str(i) for i in item["token_ids"]))
    return 0


# --------------------------------------------------------------------------------------------------------------------
# gvt demo
# --------------------------------------------------------------------------------------------------------------------


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="a GVTVisionTokenizer folder or Hub id (default: tiny random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")


@command("demo", "the main job: tokenize sample images and decode the tokens")(_configure_demo)
def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    results = run_demo(args.model, seed=args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


# --------------------------------------------------------------------------------------------------------------------
# gvt tiny-random
# --------------------------------------------------------------------------------------------------------------------


def _configure_tiny_random(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder")
    parser.add_argument("--mode", choices=["ids", "features", "codebook"], default="ids", help="image_input_mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")


@command("tiny-random", "write a complete tiny random LaVIT repo (config, weights, processor) for tests and CI")(
    _configure_tiny_random
)
def _run_tiny_random(args: argparse.Namespace) -> int:
    from .tiny_random import save_tiny_random

    path = save_tiny_random(args.out, image_input_mode=args.mode, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gvt", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"gvt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
