"""Training [`LaVITForCausalLM`] with `transformers.Trainer`: datasets, arguments, LoRA, and the `gvt train` jobs.

Three trainings, one command each (`gvt train tokenizer|llm|ett --help`); every one also runs under
`accelerate launch` or `torchrun --nproc_per_node N` (CPU processes talk over gloo), data-parallel (DDP), and `llm` /
`ett` also sharded with `--fsdp` (FSDP2, [`gvt.training.fsdp.FSDPTrainer`]). The command line parses; the jobs take
a [`gvt.training.arguments.TrainJobArguments`]:

- `tokenizer`: LaVIT stage 1, [`gvt.training.tokenizer_training.train_tokenizer`] on the dataset's images.
- `llm`: LLM training on image + text rows ([`GVTDataCollator`]; captions or prompt + answer), the tokenizer
  frozen; `--lora` trains LoRA adapters on the language model only (peft), saved as an adapter.
- `ett`: `"codebook"` mode with [`ETTCallback`]: projector first, then tokenizer + LLM jointly with
  `L_caption + alpha * L_reconstruction`.

Library use, the same in a script:

```python
from transformers import Trainer
from gvt import GVTDataCollator, ETTCallback
from gvt.training.llm_training import training_arguments

args = training_arguments("out", max_steps=1000, per_device_train_batch_size=8, learning_rate=1e-4)
trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=GVTDataCollator(processor),
                  callbacks=[ETTCallback(unfreeze_step=500)])
trainer.train()                       # or trainer.train(resume_from_checkpoint=True)
```

`training_arguments` only fills defaults this package needs: `remove_unused_columns=False` (the collator reads the
raw `image` / `text` columns, which the Trainer would otherwise drop), `restore_callback_states_from_checkpoint=True`,
gloo on CPU, no external loggers.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.utils import logging

from .arguments import TrainJobArguments
from .collator import GVTDataCollator
from .ett import ETTCallback
from .fsdp import DEFAULT_FSDP_CONFIG, FSDPTrainer

logger = logging.get_logger(__name__)

DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)$"


def training_arguments(output_dir: str | os.PathLike, **overrides: Any) -> TrainingArguments:
    """`TrainingArguments` with the defaults gvt's collator and callback need (see the module docstring); any
    `TrainingArguments` field can be overridden."""
    defaults: dict[str, Any] = {
        "remove_unused_columns": False,
        "restore_callback_states_from_checkpoint": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "dataloader_num_workers": 0,
    }
    if not torch.cuda.is_available():
        defaults["use_cpu"] = True
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun / accelerate launch on CPU
            defaults["ddp_backend"] = "gloo"
    defaults.update(overrides)
    return TrainingArguments(output_dir=str(output_dir), **defaults)


def make_lora_model(
    model,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] = DEFAULT_LORA_TARGETS,
    modules_to_save: list[str] | None = None,
):
    """`peft.get_peft_model` with LoRA on the language model's attention projections only (the vision tokenizer
    stays untouched). Only the adapters train; `save_pretrained` writes the adapter, which
    `peft.PeftModel.from_pretrained(fresh_base, folder)` loads back. For ETT pass
    `modules_to_save=["codebook_projector", "token_selector", "token_merger", "quantizer", "highres"]` so that the
    projector and tokenizer train as saved copies."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def is_pretokenized(source: str | os.PathLike) -> bool:
    """Whether `source` is the output folder of `gvt pretokenize` (visual ids instead of images)."""
    return Path(source).is_dir() and (Path(source) / "manifest.json").is_file()


def load_rows(source: str, split: str = "train", streaming: bool = False, image_size: int = 112):
    """A dataset of training rows from `source`:

    - `synthetic:N` / `synthetic:N:count` / `synthetic:N:presence`: N synthetic scenes as caption rows (`image`,
      `text`) or question rows (`image`, `prompt`, `answer`);
    - a `gvt pretokenize` output folder (it holds `manifest.json`): rows of visual ids, no pixels ("ids" mode);
    - a folder: `datasets`' image folder (a `metadata.jsonl` gives the `text` or `prompt` / `answer` columns);
    - a `.json` / `.jsonl` / `.parquet` file (image paths, relative to the file's folder, or image bytes), or a
      quoted pattern of such files (`'data/*.parquet'`; streamed, each file is one shard of the stream);
    - anything else: a dataset name or folder for `datasets.load_dataset`.
    """
    import datasets

    if source.startswith("synthetic:"):
        from ..data import build_synthetic_dataset, to_caption_rows, to_qa_rows

        parts = source.split(":")
        count = int(parts[1])
        kind = parts[2] if len(parts) > 2 else "caption"
        scenes = build_synthetic_dataset(count, 0, 0, image_size=image_size)["train"]
        rows = to_caption_rows(scenes) if kind == "caption" else to_qa_rows(scenes, kind=kind)
        return rows.to_iterable_dataset() if streaming else rows
    pattern = _data_files(source)
    if pattern is not None:
        builder, files = pattern
        return datasets.load_dataset(builder, data_files=files, split=split, streaming=streaming)
    path = Path(source)
    if is_pretokenized(path):
        from ..pretokenize import load_pretokenized

        return load_pretokenized(path, streaming=streaming)
    if path.is_dir():
        return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".json", ".jsonl", ".parquet"):
        builder = "parquet" if suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=str(path), split=split, streaming=streaming)
    return datasets.load_dataset(source, split=split, streaming=streaming)


def _data_files(source: str) -> tuple[str, list[str]] | None:
    """(builder, sorted files) of a glob of `.json` / `.jsonl` / `.parquet` files, else None."""
    if not glob.has_magic(source):
        return None
    files = sorted(glob.glob(os.path.expanduser(source)))
    suffixes = {Path(file).suffix.lower() for file in files}
    mixed = ".parquet" in suffixes and len(suffixes) > 1
    if not files or mixed or not suffixes <= {".json", ".jsonl", ".parquet"}:
        raise ValueError(
            f"The pattern {source!r} matches {len(files)} file(s) with suffixes {sorted(suffixes)}; a pattern must "
            "match .json/.jsonl files or .parquet files."
        )
    return ("parquet" if suffixes == {".parquet"} else "json"), files


def dataset_image_root(source: str) -> str | None:
    """The folder that relative image paths of a file source (or a pattern of files) are resolved against."""
    path = Path(os.path.expanduser(source))
    return str(path.parent) if path.is_file() or glob.has_magic(source) else None


# ------------------------------------------------------------------------------------------------------------------
# `gvt train`
# ------------------------------------------------------------------------------------------------------------------


def _load_model(name: str, mode: str):
    from ..tiny_random import build_tiny_random

    if name == "tiny":
        return build_tiny_random(image_input_mode=mode, seed=0)
    from transformers import AutoModelForCausalLM, AutoProcessor

    return AutoModelForCausalLM.from_pretrained(name), AutoProcessor.from_pretrained(name)


def _train_tokenizer_job(args: TrainJobArguments) -> dict[str, Any]:
    from ..atomic_write import HF_WEIGHT_FILES, atomic_output_dir
    from ..configuration_gvt import VISION_PRESETS, GVTVisionConfig
    from ..image_processing_gvt import GVTImageProcessor
    from ..modeling_gvt import GVTVisionTokenizer
    from .tokenizer_training import train_tokenizer

    if args.model == "tiny":
        torch.manual_seed(args.seed)
        hidden_size = VISION_PRESETS["tiny"]["hidden_size"]
        tokenizer = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", decoder_output_dim=hidden_size))
    else:
        tokenizer = GVTVisionTokenizer.from_pretrained(args.model)
    size = tokenizer.config.image_size
    rows = load_rows(args.dataset, args.split, image_size=size)
    processor = GVTImageProcessor(size={"height": size, "width": size})
    pixels = processor(list(rows["image"]), return_tensors="pt")["pixel_values"]
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    resume = None
    if args.resume is not None:
        resume = True if args.resume == "last" else args.resume
    history = train_tokenizer(
        tokenizer,
        pixels,
        num_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        target_keep_ratio=args.target_keep_ratio,
        seed=args.seed,
        progress_bar=not args.no_progress,
        accelerator=accelerator,
        save_steps=args.save_steps,
        checkpoint_dir=args.output_dir,
        resume_from_checkpoint=resume,
    )
    if accelerator is None or accelerator.is_main_process:
        # the final model replaces an earlier one in the folder; its checkpoints (and anything else) are kept
        with atomic_output_dir(args.output_dir, overwrite=True, owns=HF_WEIGHT_FILES) as staging:
            tokenizer.save_pretrained(staging)
    return {"loss": history.loss, "final_loss": history.loss[-1]}


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-<step>` of a `Trainer` run whose `trainer_state.json` (the file `Trainer` writes last)
    exists and parses: a run killed while saving leaves a partial checkpoint that must not be resumed."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for entry in folder.iterdir():
        step = entry.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if entry.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and step.isdigit() and _trainer_state_ok(entry):
            found.append((int(step), entry))
        elif entry.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and step.isdigit():
            logger.warning(f"Skipping the incomplete checkpoint {entry} (an interrupted save).")
    return str(max(found)[1]) if found else None


def _trainer_state_ok(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _resume_argument(args: TrainJobArguments) -> str | None:
    if args.resume is None:
        return None
    if args.resume == "last":
        found = last_complete_checkpoint(args.output_dir)
        if found is None:
            raise FileNotFoundError(f"--resume last: no complete checkpoint in {args.output_dir}.")
        return found
    if not _trainer_state_ok(Path(args.resume)):
        raise FileNotFoundError(f"--resume {args.resume}: not a complete checkpoint (no readable trainer_state.json).")
    return args.resume


def run_train(args: TrainJobArguments) -> int:
    """Run `gvt train JOB` with `args`; returns the exit code."""
    from ..atomic_write import check_output_dir

    # before any work: not the working directory, not a file (the folder may hold checkpoints to resume)
    check_output_dir(args.output_dir, overwrite=True)
    if args.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ValueError(
            "fsdp shards the model over several processes: launch with `torchrun --nproc_per_node N` or "
            "`accelerate launch`."
        )
    if args.job != "llm" and is_pretokenized(args.dataset):
        raise ValueError(
            f"gvt train {args.job} tunes the visual tokenizer, which needs images; {args.dataset} holds pre-tokenized "
            "visual ids (gvt pretokenize): train `llm` on it, or pass the images."
        )
    if args.job == "tokenizer":
        result = _train_tokenizer_job(args)
    else:
        result = _train_llm_job(args)
    if args.result_json and int(os.environ.get("RANK", "0")) == 0:
        from ..atomic_write import write_text_atomically

        write_text_atomically(args.result_json, json.dumps(result, indent=1))
    print(f"gvt train {args.job}: final loss {result['final_loss']:.6f}; saved to {args.output_dir}")
    return 0


def _train_llm_job(args: TrainJobArguments) -> dict[str, Any]:
    resume = _resume_argument(args)
    model, processor = _load_model(args.model, "codebook" if args.job == "ett" else "ids")
    callbacks = []
    if args.job == "ett":
        if model.config.image_input_mode != "codebook":
            raise ValueError(
                f"gvt train ett needs a model in 'codebook' mode; {args.model} is in "
                f"{model.config.image_input_mode!r} mode."
            )
        if args.alpha is not None:
            model.config.ett_reconstruction_weight = args.alpha
        if model.config.ett_reconstruction_weight > 0:
            try:
                model.ett_decoder_type()
            except ValueError as error:
                reason = str(error).split("; or set")[0].rstrip(".")
                raise ValueError(
                    f"{reason}. Pass --alpha 0 to tune the tokenizer on the caption loss alone."
                ) from None
        unfreeze = args.unfreeze_step if args.unfreeze_step is not None else args.max_steps // 2
        callbacks.append(ETTCallback(unfreeze_step=unfreeze, refreeze_step=args.refreeze_step))
    else:
        model.vision_tokenizer.requires_grad_(False)
    if args.lora:
        to_save = None
        if args.job == "ett":
            to_save = ["codebook_projector", "token_selector", "token_merger", "quantizer", "highres"]
        elif model.codebook_projector is not None:
            to_save = ["codebook_projector"]
        model = make_lora_model(model, r=args.lora_r, modules_to_save=to_save)
    vision_size = processor.image_processor.size
    rows = load_rows(args.dataset, args.split, streaming=args.streaming, image_size=vision_size["height"])
    collator = GVTDataCollator(
        processor,
        supervise=args.supervise,
        on_bad_image=args.on_bad_image,
        image_root=dataset_image_root(args.dataset),
    )
    options = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {}
    if args.fsdp:
        fsdp_config = json.loads(Path(args.fsdp_config).read_text()) if args.fsdp_config else DEFAULT_FSDP_CONFIG
        options.update(fsdp=True, fsdp_config=dict(fsdp_config))  # a copy: TrainingArguments edits it in place
    training_args = training_arguments(
        args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        disable_tqdm=args.no_progress,
        **options,
    )
    trainer = FSDPTrainer(
        model=model, args=training_args, train_dataset=rows, data_collator=collator, callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero() and hasattr(processor, "save_pretrained"):
        processor.save_pretrained(args.output_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    stages = [entry for entry in trainer.state.log_history if "ett_stage" in entry]
    return {"loss": losses, "final_loss": losses[-1], "ett_stages": stages, "skipped_rows": collator.num_skipped}


def main(argv: list[str] | None = None) -> int:
    """`python -m gvt.training.llm_training JOB ...`: the same as `gvt train JOB ...` (the command line parses)."""
    import sys

    from gvt_cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


__all__ = [
    "training_arguments",
    "make_lora_model",
    "load_rows",
    "TrainJobArguments",
    "run_train",
    "last_complete_checkpoint",
    "main",
]


if __name__ == "__main__":
    raise SystemExit(main())
