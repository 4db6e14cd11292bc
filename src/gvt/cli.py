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
    parser.add_argument(
        "--model",
        default=None,
        help="a LaVIT repo or GVTVisionTokenizer folder / Hub id (default: the embedded default)",
    )
    parser.add_argument("--random", action="store_true", help="use a tiny random tokenizer instead (smoke tests)")
    parser.add_argument("--selection", choices=["deterministic", "sample"], default="deterministic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("tokenize", "turn images into dynamic-length visual token ids")(_configure_tokenize)
def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenize_images import load_tokenizer_and_processor, tokenize_files

    if args.random:
        tokenizer, processor = load_tokenizer_and_processor(None, seed=args.seed)
    else:
        from .default_model import load_vision_tokenizer

        tokenizer, processor = load_vision_tokenizer(args.model)
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
    from .demo import DEFAULT_NUM_SCENES, DEFAULT_PICTURE

    parser.add_argument("--model", default=None, help="a LaVIT repo folder (default: the embedded default)")
    parser.add_argument("--num-scenes", type=int, default=DEFAULT_NUM_SCENES, help="held-out test scenes to evaluate")
    parser.add_argument("--seed", type=int, default=None, help="data seed (default: the one the model trained with)")
    parser.add_argument("--picture", default=DEFAULT_PICTURE, help="where to write the picture")
    parser.add_argument("--no-picture", action="store_true", help="skip the picture (and the decoder pipeline)")
    parser.add_argument("--json", default=None, help="also write the metrics as JSON to this file")


@command("demo", "the main job: caption and answer questions on held-out scenes, metrics table, picture")(
    _configure_demo
)
def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.model,
        num_scenes=args.num_scenes,
        seed=args.seed,
        picture=None if args.no_picture else args.picture,
        json_path=args.json,
    )
    return 0


# --------------------------------------------------------------------------------------------------------------------
# gvt caption
# --------------------------------------------------------------------------------------------------------------------


def _configure_caption(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument("--model", default=None, help="a LaVIT repo folder (default: the embedded default)")
    parser.add_argument("--prompt", default=None, help="ask a question instead of captioning")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("caption", "caption images (or answer --prompt about them) with the embedded default")(_configure_caption)
def _run_caption(args: argparse.Namespace) -> int:
    from .demo import caption_files

    results = caption_files(args.images, model=args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for item in results:
            print(f"{item['image']}: {item['text']}")
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


# --------------------------------------------------------------------------------------------------------------------
# gvt reconstruct
# --------------------------------------------------------------------------------------------------------------------


def _configure_reconstruct(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument(
        "--decoder", default=None, help="a LaVITDecoderPipeline folder (default: the embedded default's decoder/)"
    )
    parser.add_argument(
        "--model", default=None, help="a LaVIT repo folder with decoder/ (default: the embedded default)"
    )
    parser.add_argument("--out", default="reconstructions", help="output folder")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance scale")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)


@command("reconstruct", "tokenize images and decode the tokens back into images (diffusion decoder)")(
    _configure_reconstruct
)
def _run_reconstruct(args: argparse.Namespace) -> int:
    from .pipeline_lavit_decoder import LaVITDecoderPipeline
    from .reconstruct_images import reconstruct_files

    if args.decoder is None:
        from .default_model import load_default

        pipeline = load_default(args.model).decoder
        if pipeline is None:
            raise FileNotFoundError(f"The model folder {args.model} has no decoder/ pipeline; pass --decoder.")
    else:
        pipeline = LaVITDecoderPipeline.from_pretrained(args.decoder)
    written = reconstruct_files(
        pipeline,
        args.images,
        args.out,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------------------------------------------------
# gvt train
# --------------------------------------------------------------------------------------------------------------------


def _configure_train(parser: argparse.ArgumentParser) -> None:
    from .training.llm_training import add_train_arguments

    add_train_arguments(parser)


@command("train", "train the tokenizer, the LLM (optionally LoRA) or both jointly (ETT); torchrun/accelerate ready")(
    _configure_train
)
def _run_train(args: argparse.Namespace) -> int:
    from .training.llm_training import run_train

    return run_train(args)


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
