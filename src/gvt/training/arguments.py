"""`TrainJobArguments`: the typed arguments of a `gvt train` job (the `TrainingArguments` way).

The command line builds its options from these fields (name `--output-dir` for `output_dir`, the `help` of each
field, `choices` where given, a switch for each `bool`); library code only ever sees the dataclass:

```python
from gvt.training.arguments import TrainJobArguments
from gvt.training.llm_training import run_train

run_train(TrainJobArguments(job="llm", output_dir="out", dataset="synthetic:64", max_steps=10, fsdp=True))
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TRAIN_JOBS = ("tokenizer", "llm", "ett")
SUPERVISE_CHOICES = ("answer", "all")
ON_BAD_IMAGE_CHOICES = ("raise", "skip")

DATASET_HELP = (
    "synthetic:N[:count|:presence] (N synthetic scenes as caption, counting or presence rows); a gvt pretokenize "
    "output folder (visual ids, no pixels: llm only); a folder "
    "(datasets' imagefolder, metadata.jsonl with `text`, or `prompt` and `answer`); a .json/.jsonl/.parquet "
    "file (columns `image`: a path relative to the file or bytes, and `text` or `prompt`/`answer`); else a "
    "dataset name or folder for datasets.load_dataset"
)


@dataclass
class TrainJobArguments:
    """Arguments of `gvt train JOB` (`gvt train --help` lists them with their defaults)."""

    job: str = field(metadata={"help": "which training", "choices": TRAIN_JOBS, "positional": True})
    output_dir: str = field(metadata={"help": "where checkpoints and the trained model go"})
    model: str = field(default="tiny", metadata={"help": "a saved model folder, or 'tiny' (tiny random, for trials)"})
    dataset: str = field(default="synthetic:64", metadata={"help": DATASET_HELP})
    split: str = field(default="train", metadata={"help": "dataset split"})
    streaming: bool = field(default=False, metadata={"help": "stream the dataset (needs --max-steps)"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=4, metadata={"help": "per device"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "batches per step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of data order and initialisation"})
    save_steps: int = field(default=0, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    resume: str | None = field(default=None, metadata={"help": "a checkpoint folder, or 'last'"})
    fsdp: bool = field(
        default=False,
        metadata={
            "help": "llm / ett: shard parameters, gradients and optimizer state over the processes (FSDP2, "
            "under torchrun or accelerate launch; also on CPU over gloo)"
        },
    )
    fsdp_config: str | None = field(
        default=None,
        metadata={
            "help": "with --fsdp: a JSON file of TrainingArguments.fsdp_config entries (default: FSDP2, one shard "
            "group per transformer layer, full state dict checkpoints)"
        },
    )
    lora: bool = field(default=False, metadata={"help": "llm / ett: LoRA adapters on the language model"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    supervise: str = field(
        default="answer",
        metadata={"help": "loss on the answer only, or on all text", "choices": SUPERVISE_CHOICES},
    )
    on_bad_image: str = field(
        default="raise",
        metadata={"help": "an unreadable image stops the run, or is skipped", "choices": ON_BAD_IMAGE_CHOICES},
    )
    unfreeze_step: int | None = field(default=None, metadata={"help": "ett: stage 2 after N steps (default: half)"})
    refreeze_step: int | None = field(default=None, metadata={"help": "ett: stage 3 after N steps"})
    alpha: float | None = field(default=None, metadata={"help": "ett: reconstruction weight (config default 0.25)"})
    target_keep_ratio: float = field(default=0.5, metadata={"help": "tokenizer: keep-ratio target"})
    no_progress: bool = field(default=False, metadata={"help": "no progress bars"})
    result_json: str | None = field(default=None, metadata={"help": "write the per-step losses here (main process)"})

    def __post_init__(self):
        for name, allowed in (
            ("job", TRAIN_JOBS),
            ("supervise", SUPERVISE_CHOICES),
            ("on_bad_image", ON_BAD_IMAGE_CHOICES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be 0 (only at the end) or positive, got {self.save_steps}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 < self.target_keep_ratio <= 1:
            raise ValueError(f"target_keep_ratio must be in (0, 1], got {self.target_keep_ratio}.")
        if self.alpha is not None and self.alpha < 0:
            raise ValueError(f"alpha (the ETT reconstruction weight) must be >= 0, got {self.alpha}.")
        if self.fsdp and self.job == "tokenizer":
            raise ValueError(
                "fsdp applies to the llm and ett jobs (Trainer); tokenizer training runs data-parallel under "
                "torchrun without it."
            )
        if self.fsdp_config is not None and not self.fsdp:
            raise ValueError("fsdp_config is given without fsdp: pass --fsdp as well.")
        if self.fsdp_config is not None and not os.path.isfile(self.fsdp_config):
            raise FileNotFoundError(f"fsdp_config {self.fsdp_config}: no such file.")
        if self.output_dir in ("", None):
            raise ValueError("output_dir is required.")


__all__ = ["TrainJobArguments", "TRAIN_JOBS"]
