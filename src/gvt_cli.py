"""The `gvt` command line: argument parsing only; the work is done by gvt's library functions.

A top-level module, so that `gvt --help` answers without importing `gvt` (which registers its classes with
transformers' Auto classes, and so imports torch and transformers): a command imports what it needs when it runs, and
only the chosen command's arguments are configured.
"""

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


def add_selection_arguments(parser: argparse.ArgumentParser, seed_help: str, sampling_note: str = "") -> None:
    """`--selection`, `--seed` and `--max-tokens`: how the LaVIT tokenizer chooses the patches it keeps."""
    parser.add_argument(
        "--selection",
        choices=["deterministic", "sample"],
        default="deterministic",
        help=f"keep patches where p(keep) >= 0.5, or sample the keep decision{sampling_note}",
    )
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--max-tokens", type=int, default=None, help="keep at most this many tokens per image")


def _configure_tokenize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument(
        "--model",
        default=None,
        help="a LaVIT repo or GVTVisionTokenizer folder / Hub id (default: the embedded default)",
    )
    parser.add_argument("--random", action="store_true", help="use a tiny random tokenizer instead (smoke tests)")
    add_selection_arguments(parser, seed_help="seed of --selection sample and of --random weights")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("tokenize", "turn images into dynamic-length visual token ids")(_configure_tokenize)
def _run_tokenize(args: argparse.Namespace) -> int:
    from gvt.tokenize_images import load_tokenizer_and_processor, tokenize_files

    if args.random:
        tokenizer, processor = load_tokenizer_and_processor(None, seed=args.seed)
    else:
        from gvt.default_model import load_vision_tokenizer

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
    from gvt.demo import DEFAULT_NUM_SCENES, DEFAULT_PICTURE

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
    from gvt.demo import run_demo

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
    parser.add_argument("--max-new-tokens", type=int, default=48, help="longest answer, in tokens")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("caption", "caption images (or answer --prompt about them) with the embedded default")(_configure_caption)
def _run_caption(args: argparse.Namespace) -> int:
    from gvt.demo import caption_files

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
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")


@command("tiny-random", "write a complete tiny random LaVIT repo (config, weights, processor) for tests and CI")(
    _configure_tiny_random
)
def _run_tiny_random(args: argparse.Namespace) -> int:
    from gvt.tiny_random import save_tiny_random

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
    parser.add_argument("--height", type=int, default=None, help="output height (default: the decoder's)")
    parser.add_argument("--width", type=int, default=None, help="output width (default: the decoder's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise")


@command("reconstruct", "tokenize images and decode the tokens back into images (diffusion decoder)")(
    _configure_reconstruct
)
def _run_reconstruct(args: argparse.Namespace) -> int:
    from gvt.pipeline_lavit_decoder import LaVITDecoderPipeline
    from gvt.reconstruct_images import reconstruct_files

    if args.decoder is None:
        from gvt.default_model import load_default

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
    """One option per field of `TrainJobArguments` (its `help` and `choices`; a `bool` is a switch)."""
    import dataclasses
    import typing

    from gvt.training.arguments import TrainJobArguments

    types = typing.get_type_hints(TrainJobArguments)
    for spec in dataclasses.fields(TrainJobArguments):
        options = {"help": spec.metadata["help"]}
        if "choices" in spec.metadata:
            options["choices"] = list(spec.metadata["choices"])
        if types[spec.name] is bool:
            options["action"] = "store_true"
        else:
            value_types = [kind for kind in typing.get_args(types[spec.name]) if kind is not type(None)]
            options["type"] = value_types[0] if value_types else types[spec.name]
            if spec.default is dataclasses.MISSING and not spec.metadata.get("positional"):
                options["required"] = True
        if spec.default is not dataclasses.MISSING:
            options["default"] = spec.default
        if spec.metadata.get("positional"):
            parser.add_argument(spec.name, **options)
        else:
            parser.add_argument("--" + spec.name.replace("_", "-"), **options)


@command("train", "train the tokenizer, the LLM (optionally LoRA) or both jointly (ETT); torchrun/accelerate ready")(
    _configure_train
)
def _run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from gvt.training.arguments import TrainJobArguments
    from gvt.training.llm_training import run_train

    return run_train(
        TrainJobArguments(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(TrainJobArguments)})
    )


# --------------------------------------------------------------------------------------------------------------------
# gvt pretokenize
# --------------------------------------------------------------------------------------------------------------------


def _configure_pretokenize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="an image folder (datasets' imagefolder; metadata.jsonl adds caption columns), a .json/.jsonl/.parquet "
        "file or a quoted pattern of them ('data/*.parquet': one input shard per file when streaming; column `image`: "
        "a path relative to the file, or bytes), synthetic:N, or a dataset name or folder for datasets.load_dataset",
    )
    parser.add_argument(
        "--output-dir",
        required=True,
        help="where the parquet shards and manifest.json go; a new or empty folder, or an interrupted run with the "
        "same settings (resumed)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="a LaVIT repo or GVTVisionTokenizer folder / Hub id (default: the embedded default); 'random': a tiny "
        "random tokenizer (trials)",
    )
    parser.add_argument("--split", default="train", help="dataset split")
    parser.add_argument("--streaming", action="store_true", help="stream the source (each source file an input shard)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass of the tokenizer")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="threads that decode images ahead of the tokenizer (0: the main thread); worth it on a GPU",
    )
    parser.add_argument("--shard-size", type=int, default=10_000, help="rows per output shard")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="the tokenizer's dtype"
    )
    parser.add_argument("--device", default=None, help="default: this process's GPU (LOCAL_RANK) if any, else the CPU")
    add_selection_arguments(
        parser,
        seed_help="seed of --selection sample and of --model random",
        sampling_note=" (seeded per shard and batch)",
    )
    parser.add_argument(
        "--on-bad-image",
        choices=["raise", "skip"],
        default="skip",
        help="an image that fails to decode is skipped and counted in the manifest, or stops the run",
    )
    parser.add_argument("--image-column", default="image", help="the image column")
    parser.add_argument(
        "--id-column", default="id", help="a column of unique row ids used as `key` when present (else row position)"
    )
    parser.add_argument(
        "--text-columns",
        nargs="+",
        default=None,
        help="columns carried into the shards (default: every column but the image column)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command(
    "pretokenize",
    "image dataset -> parquet shards of visual token ids + manifest; resumable, torchrun/accelerate data-parallel",
)(_configure_pretokenize)
def _run_pretokenize(args: argparse.Namespace) -> int:
    from gvt.pretokenize import PretokenizeArguments, pretokenize

    arguments = PretokenizeArguments(
        source=args.source,
        output_dir=args.output_dir,
        model=args.model,
        split=args.split,
        streaming=args.streaming,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        dtype=args.dtype,
        device=args.device,
        selection=args.selection,
        seed=args.seed,
        max_tokens=args.max_tokens,
        on_bad_image=args.on_bad_image,
        image_column=args.image_column,
        id_column=args.id_column,
        text_columns=args.text_columns,
        progress=not args.no_progress,
    )
    result = pretokenize(arguments)
    if result.manifest:
        manifest = result.manifest
        print(
            f"{result.output_dir}: {manifest['num_rows']} rows in {manifest['num_shards']} shards, "
            f"{manifest['num_skipped_images']} images skipped ({result.shards_skipped} shards were already done)"
        )
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append each option's default to its help, except None and False (said in words, or a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help is None or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the `chosen` command only (the others show their one-line help)."""
    parser = argparse.ArgumentParser(
        prog="gvt",
        description="Visual tokenizers for large language models (LaVIT, GVT, ETT). "
        "`gvt COMMAND --help` lists a command's options and their defaults.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        if name == chosen:
            configure(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((argument for argument in argv if not argument.startswith("-")), None)
    args = build_parser(chosen).parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"gvt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
