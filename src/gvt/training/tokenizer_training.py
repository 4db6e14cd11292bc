"""Training of the visual tokenizer itself.

- [`train_tokenizer`]: LaVIT stage 1. The encoder is frozen and its patch features are the target; the token selector
  (hard Gumbel-softmax, straight-through), token merger, quantizer and one feature decoder learn to reconstruct them
  ([`tokenizer_loss`]: cosine reconstruction + codebook / commitment + keep-ratio regulariser). After every optimizer
  step the codebook rows are re-normalised and codes unused for `dead_code_threshold` steps restart at recent
  quantizer inputs. Where labels exist (synthetic scenes), optional fine-grained supervision: per-patch keep targets
  for the selector (`keep_targets`, optionally teacher-forcing the kept set) and per-patch class labels for the codes
  through a linear probe (`code_labels`), see `gvt.training.losses`.
- [`train_patch_distillation`]: GVT's patch-level feature distillation of an encoder from a frozen teacher.
- [`pretrain_encoder_on_patch_labels`]: no pretrained encoder exists offline, so give the encoder something to encode
  first: per-patch classification (e.g. `gvt.data.patch_labels` of the synthetic scenes) with a linear head.
- [`evaluate_tokenizer`]: reconstruction, keep ratio and codebook usage of a tokenizer on held-out images.

LaVIT never released its tokenizer training code; the recipe follows the paper (cosine reconstruction of the frozen
EVA-CLIP features, keep-ratio target) and standard VQ practice (straight-through estimator, commitment 0.25, dead-code
restarts as in vector-quantize-pytorch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import ModelOutput, logging

from ..atomic_write import atomic_output_dir
from ..modeling_gvt import GVTVisionEncoder, GVTVisionTokenizer, GVTVisionTokenizerOutput
from .losses import (
    DistillationLossType,
    PatchDistillationLossOutput,
    TokenizerLossOutput,
    check_target_keep_ratio,
    code_perplexity,
    code_usage_counts,
    feature_reconstruction_loss,
    normalize_codebook_,
    patch_distillation_loss,
    primary_token_labels,
    restart_dead_codes_,
    straight_through_codes,
    tokenizer_loss,
)

logger = logging.get_logger(__name__)

DECODER_TYPES = ("highres", "lowres")


# ------------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingHistory:
    """Per-step record of [`train_tokenizer`] (one entry per optimizer step).

    `keep_ratio` is the soft ratio (mean selector keep probability), `hard_keep_ratio` the share of patches kept;
    `codebook_usage` the share of codebook rows assigned at least once in the last `usage_window` steps;
    `perplexity` the code perplexity of the step's batch; `restarted_codes` how many dead codes restarted.
    """

    target_keep_ratio: float = 0.5
    usage_window: int = 1
    loss: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    codebook: list[float] = field(default_factory=list)
    commitment: list[float] = field(default_factory=list)
    keep_ratio_penalty: list[float] = field(default_factory=list)
    selector_entropy: list[float] = field(default_factory=list)
    keep_ratio: list[float] = field(default_factory=list)
    hard_keep_ratio: list[float] = field(default_factory=list)
    codebook_usage: list[float] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    restarted_codes: list[int] = field(default_factory=list)
    selector_supervision: list[float] = field(default_factory=list)
    code_classification: list[float] = field(default_factory=list)
    code_accuracy: list[float] = field(default_factory=list)
    code_probe: nn.Module | None = None
    """The trained linear probe codes -> classes (only with `code_labels`)."""

    def __len__(self) -> int:
        return len(self.loss)


@dataclass
class TokenizerEvaluation(ModelOutput):
    """[`evaluate_tokenizer`] on a set of images (deterministic selection, eval mode).

    Args:
        reconstruction: mean `1 - cos` between decoded and encoder patch features.
        keep_ratio: share of patches kept.
        codebook_usage: share of codebook rows assigned to at least one token of the set.
        perplexity: code perplexity over the set.
        tokens_per_image: mean number of visual tokens per image.
    """

    reconstruction: float | None = None
    keep_ratio: float | None = None
    codebook_usage: float | None = None
    perplexity: float | None = None
    tokens_per_image: float | None = None


@dataclass
class PatchPretrainingOutput:
    """[`pretrain_encoder_on_patch_labels`]: per-step `losses` and patch `accuracies`, and the trained `head`."""

    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    head: nn.Module | None = None


@dataclass
class PatchDistillationOutput:
    """[`train_patch_distillation`]: per-step `losses` and mean cosine similarities, and the student -> teacher
    `head` (`nn.Identity` when the widths match)."""

    losses: list[float] = field(default_factory=list)
    cosine_similarities: list[float] = field(default_factory=list)
    head: nn.Module | None = None


# ------------------------------------------------------------------------------------------------------------------
# Checks and data
# ------------------------------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def check_tokenizer_for_training(model: GVTVisionTokenizer, decoder_type: str) -> None:
    """Raise a clear `ValueError` unless `model` can train with the feature decoder `decoder_type`: a discrete
    tokenizer whose decoder reconstructs one feature per patch at the encoder's width."""
    if decoder_type not in DECODER_TYPES:
        raise ValueError(f"Unknown decoder_type {decoder_type!r}; expected one of {list(DECODER_TYPES)}.")
    config = model.config
    if config.tokenizer_type != "lavit":
        raise ValueError("Tokenizer training needs a discrete (tokenizer_type='lavit') tokenizer; this one is 'gvt'.")
    if decoder_type not in model.decoders:
        raise ValueError(f"This tokenizer has no {decoder_type!r} decoder; it has {sorted(model.decoders)}.")
    if config.decoder_output_dim != config.hidden_size:
        raise ValueError(
            f"decoder_output_dim ({config.decoder_output_dim}) must equal the encoder's hidden_size "
            f"({config.hidden_size}): the feature decoder reconstructs the encoder's patch features."
        )
    if config.decoder_num_queries != config.num_patches:
        raise ValueError(
            f"decoder_num_queries ({config.decoder_num_queries}) must equal the number of patches "
            f"({config.num_patches}): the feature decoder reconstructs one feature per patch."
        )


def _pixel_values_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        if "pixel_values" not in batch:
            raise ValueError(f"A training batch needs a 'pixel_values' entry; got keys {sorted(batch)}.")
        return batch["pixel_values"]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"Cannot read pixel_values from a batch of type {type(batch).__name__}.")


def _batches(
    data: torch.Tensor | Iterable[Any], batch_size: int, generator: torch.Generator, *extra: torch.Tensor
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches: random minibatches of the tensors `data` (+ `extra`, indexed alike), or the pixel values of
    an iterable of batches (a `DataLoader` of dicts, tensors or tuples), cycled."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape [images, channels, height, width], got {tuple(data.shape)}."
            )
        if data.shape[0] == 0:
            raise ValueError("pixel_values hold no image.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        for tensor in extra:
            if tensor.shape[0] != data.shape[0]:
                raise ValueError(f"Got {data.shape[0]} images but {tensor.shape[0]} targets.")
        count = data.shape[0]
        while True:
            index = torch.randperm(count, generator=generator)[: min(batch_size, count)]
            yield (data[index], *(tensor[index] for tensor in extra))
    else:
        if extra:
            raise TypeError("Pass tensors (not a data loader) together with per-image targets.")
        while True:
            empty = True
            for batch in data:
                empty = False
                yield (_pixel_values_of(batch),)
            if empty:
                raise ValueError("The training data yielded no batch.")


def _progress(num_steps: int, description: str, accelerator, progress_bar: bool, start: int = 0):
    disable = not progress_bar or (accelerator is not None and not accelerator.is_local_main_process)
    return tqdm(range(start, num_steps), desc=description, disable=disable, initial=start, total=num_steps)


def _backward_and_step(loss, parameters, optimizer, accelerator, max_grad_norm: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if accelerator is not None:
        accelerator.backward(loss)
        if max_grad_norm is not None and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(parameters, max_grad_norm)
    else:
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


def _scheduler(optimizer, lr_scheduler_type: str, num_steps: int, warmup_steps: int):
    """A `transformers` learning-rate schedule stepped once per optimizer step ("constant" keeps the rate)."""
    from transformers import get_scheduler

    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    return get_scheduler(lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps, num_training_steps=num_steps)


def _check_positive(**values: float | int) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}.")


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints of train_tokenizer
# ------------------------------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_NAME = "training_state.pt"
_HISTORY_LISTS = [
    f.name for f in fields(TrainingHistory) if f.name not in ("target_keep_ratio", "usage_window", "code_probe")
]


def tokenizer_checkpoints(directory: str | os.PathLike | None) -> list[Path]:
    """The `checkpoint-<step>` folders of [`train_tokenizer`] in `directory`, oldest first. Each is complete: they
    are written through [`gvt.atomic_write.atomic_output_dir`]."""
    if directory is None or not Path(directory).is_dir():
        return []
    found = []
    for entry in Path(directory).iterdir():
        step = entry.name[len(CHECKPOINT_PREFIX) :]
        if entry.name.startswith(CHECKPOINT_PREFIX) and step.isdigit() and (entry / TRAINING_STATE_NAME).is_file():
            found.append((int(step), entry))
    return [path for _, path in sorted(found)]


def _resolve_resume(checkpoint_dir: Path | None, resume_from_checkpoint) -> Path | None:
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        found = tokenizer_checkpoints(checkpoint_dir)
        if not found:
            raise FileNotFoundError(
                f"No tokenizer checkpoint (checkpoint-<step>/{TRAINING_STATE_NAME}) in {checkpoint_dir}."
            )
        return found[-1]
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path} is not a tokenizer checkpoint (it has no {TRAINING_STATE_NAME}).")
    return path


def _save_checkpoint(directory: Path, step: int, model: GVTVisionTokenizer, state: dict[str, Any]) -> Path:
    """Write `checkpoint-<step>/` (the model by `save_pretrained`, the rest in `training_state.pt`) atomically."""
    target = directory / f"{CHECKPOINT_PREFIX}{step}"
    with atomic_output_dir(target) as staging:
        model.save_pretrained(staging)
        torch.save(state, staging / TRAINING_STATE_NAME)
    return target


def _load_checkpoint(path: Path, model: GVTVisionTokenizer) -> dict[str, Any]:
    """Load the weights of a checkpoint into `model` and return its training state (read with `weights_only`)."""
    from safetensors.torch import load_file

    from ..weight_files import checkpoint_read_errors

    weights = path / "model.safetensors"
    with checkpoint_read_errors(weights):
        model.load_state_dict(load_file(str(weights)), strict=True)
    with checkpoint_read_errors(path / TRAINING_STATE_NAME):
        return torch.load(path / TRAINING_STATE_NAME, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------------------------
# LaVIT stage 1: tokenizer training
# ------------------------------------------------------------------------------------------------------------------


class TokenizerObjective(nn.Module):
    """The tokenizer and its training objective as one module (one `accelerator.prepare`, one DDP wrapper):
    pixels -> (loss parts, tokenizer output).

    The forward pass samples the keep decision (`selection="sample"`, a straight-through hard Gumbel-softmax in
    training mode), feeds the straight-through code embeddings `z + sg(q - z)` to the feature decoder
    `decoder_type`, and compares its `decoded_features` with the encoder's patch features (detached: with a frozen
    encoder they carry no graph at all).

    Optional fine-grained supervision (weights 0 by default): `keep_targets` `[B, N]` train the selector directly
    (`selector_supervision_weight`; with `teacher_forced_selection` the merger and quantizer also see exactly the
    target patches as kept, as in teacher forcing), and `code_labels` `[B, N]` (one class id per patch, `-100` to
    ignore) train a linear probe `code_probe` on the straight-through code embeddings of the kept tokens
    (`code_classification_weight`, `num_code_classes` classes), so that codes carry the class of what they show.
    With `object_ids` `[B, N]` (the object whose anchor set holds each patch, -1 elsewhere; see
    `gvt.data.patch_targets`), only the first kept token of each object is labelled with its class and every other
    kept token with `duplicate_label` ([`primary_token_labels`], on the keep decision actually taken).
    """

    def __init__(
        self,
        tokenizer: GVTVisionTokenizer,
        decoder_type: str = "highres",
        target_keep_ratio: float = 0.5,
        reconstruction_weight: float = 1.0,
        codebook_weight: float = 1.0,
        commitment_weight: float = 0.25,
        keep_ratio_weight: float = 2.0,
        selector_entropy_weight: float = 0.0,
        selector_supervision_weight: float = 0.0,
        keep_target_positive_weight: float = 1.0,
        code_classification_weight: float = 0.0,
        num_code_classes: int | None = None,
        teacher_forced_selection: bool = False,
        duplicate_label: int = 0,
    ):
        super().__init__()
        self.duplicate_label = duplicate_label
        check_tokenizer_for_training(tokenizer, decoder_type)
        if code_classification_weight > 0 and not num_code_classes:
            raise ValueError("code_classification_weight > 0 needs num_code_classes (the number of patch classes).")
        self.code_probe = (
            nn.Linear(tokenizer.config.codebook_dim, num_code_classes).to(tokenizer.device)
            if num_code_classes
            else None
        )
        self.teacher_forced_selection = teacher_forced_selection
        self.keep_target_positive_weight = keep_target_positive_weight
        self.tokenizer = tokenizer
        self.decoder_type = decoder_type
        self.target_keep_ratio = check_target_keep_ratio(target_keep_ratio)
        self.weights = {
            "reconstruction_weight": reconstruction_weight,
            "codebook_weight": codebook_weight,
            "commitment_weight": commitment_weight,
            "keep_ratio_weight": keep_ratio_weight,
            "selector_entropy_weight": selector_entropy_weight,
            "selector_supervision_weight": selector_supervision_weight,
            "code_classification_weight": code_classification_weight,
        }

    def forward(
        self,
        pixel_values: torch.Tensor,
        generator: torch.Generator | None = None,
        keep_targets: torch.Tensor | None = None,
        code_labels: torch.Tensor | None = None,
        object_ids: torch.Tensor | None = None,
    ) -> tuple[TokenizerLossOutput, GVTVisionTokenizerOutput]:
        if self.teacher_forced_selection and keep_targets is None:
            raise ValueError("teacher_forced_selection needs keep_targets.")
        keep_mask = keep_targets if self.teacher_forced_selection else None
        output = self.tokenizer(pixel_values, selection="sample", generator=generator, keep_mask=keep_mask)
        target = output.encoder_hidden_states[:, 1:].detach()
        codes = straight_through_codes(output.quantizer_inputs, output.quantized)
        decoded = self.tokenizer.decoders[self.decoder_type](codes, output.attention_mask).decoded_features
        code_logits = token_labels = None
        if self.code_probe is not None and code_labels is not None:
            keep = output.keep_mask.to(codes.dtype)
            if object_ids is not None:
                code_labels = primary_token_labels(output.keep_mask, object_ids, code_labels, self.duplicate_label)
            _, (token_labels,) = GVTVisionTokenizer.gather_kept(keep, code_labels.long() + 1)
            token_labels = token_labels - 1  # padding (gathered as 0) becomes -1: ignored
            code_logits = self.code_probe(codes)
        losses = tokenizer_loss(
            output,
            decoded,
            target,
            self.target_keep_ratio,
            keep_targets=keep_targets,
            keep_target_positive_weight=self.keep_target_positive_weight,
            code_logits=code_logits,
            code_labels=token_labels,
            **self.weights,
        )
        return losses, output


def train_tokenizer(
    model: GVTVisionTokenizer,
    pixel_values_or_dataloader: torch.Tensor | Iterable[Any],
    *,
    num_steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 8,
    target_keep_ratio: float = 0.5,
    decoder_type: str = "highres",
    freeze_encoder: bool = True,
    reconstruction_weight: float = 1.0,
    codebook_weight: float = 1.0,
    commitment_weight: float = 0.25,
    keep_ratio_weight: float = 2.0,
    selector_entropy_weight: float = 0.0,
    keep_targets: torch.Tensor | None = None,
    selector_supervision_weight: float = 0.0,
    keep_target_positive_weight: float = 1.0,
    teacher_forced_selection: bool = False,
    code_labels: torch.Tensor | None = None,
    code_classification_weight: float = 0.0,
    num_code_classes: int | None = None,
    object_ids: torch.Tensor | None = None,
    duplicate_label: int = 0,
    dead_code_threshold: int | None = 20,
    usage_window: int | None = None,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    lr_scheduler_type: str = "constant",
    warmup_steps: int = 0,
    seed: int = 0,
    log_every: int = 25,
    progress_bar: bool = True,
    callback: Callable[[int, TrainingHistory], None] | None = None,
    accelerator=None,
    save_steps: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume_from_checkpoint: str | os.PathLike | bool | None = None,
) -> TrainingHistory:
    """Train the selector, merger, quantizer (projection and codebook) and one feature decoder of `model` in place
    to reconstruct the encoder's patch features (LaVIT stage 1).

    Args:
        pixel_values_or_dataloader: normalised images `[N, C, H, W]` (random minibatches of `batch_size`), or an
            iterable of batches (dicts with `pixel_values`, tensors or tuples), cycled until `num_steps`.
        target_keep_ratio: the share of patches the selector should keep, in (0, 1].
        decoder_type: the feature decoder to train (`"highres"` or `"lowres"`); its `decoder_output_dim` must equal
            `hidden_size` and its `decoder_num_queries` the number of patches.
        freeze_encoder: keep the encoder frozen (LaVIT). With `False` the encoder also trains; its detached output
            stays the target, which then moves.
        keep_targets (`[M, N]` or `[M, grid, grid]`, *optional*): per-image keep targets (1 = keep this patch), with
            tensor input only; trains the selector directly with weight `selector_supervision_weight`
            (`keep_target_positive_weight` on the positives). `teacher_forced_selection=True` also makes the merger
            and quantizer train on exactly the target patches (the selector still learns from the targets).
        code_labels (`[M, N]` or `[M, grid, grid]`, *optional*): per-patch class ids (`-100` to ignore) for a linear
            probe on the kept tokens' code embeddings (`code_classification_weight`, `num_code_classes`; default
            `code_labels.max() + 1`); the trained probe is returned as `history.code_probe`.
        object_ids (`[M, N]` or `[M, grid, grid]`, *optional*), duplicate_label: with `code_labels`, only the first
            kept token of each object's anchor set is labelled with its class, the others with `duplicate_label`
            ([`primary_token_labels`]; `gvt.data.dataset_patch_targets(..., tolerance=t)` gives such sets).
        dead_code_threshold: restart codes unused for this many steps at recent quantizer inputs; `None` disables.
        usage_window: steps over which `TrainingHistory.codebook_usage` counts used codes (default:
            `dead_code_threshold`, or 20).
        lr_scheduler_type, warmup_steps: a `transformers` schedule name ("constant", "cosine", "linear", ...) and
            its warm-up steps.
        callback: called as `callback(step, history)` after every optimizer step (1-based `step`), e.g. to evaluate.
        accelerator: an `accelerate.Accelerator`; without one, training runs on the model's device. With several
            processes, code usage is summed over them and the codebook is broadcast from process 0 after restarts.
        save_steps, checkpoint_dir: every `save_steps` optimizer steps, write `checkpoint_dir/checkpoint-<step>/`
            (the model, and in `training_state.pt` the optimizer, schedule, random generators, code-usage counters
            and history), each atomically. A fresh run refuses a `checkpoint_dir` that already holds checkpoints.
        resume_from_checkpoint: `True` (the latest checkpoint of `checkpoint_dir`) or a checkpoint folder: continue
            from there. With tensor input on one process, the resumed run ends with exactly the weights of an
            uninterrupted one.

    Returns:
        [`TrainingHistory`] with the loss parts, keep ratios and codebook usage of every step. The model is left in
        eval mode with its original `requires_grad` flags.
    """
    check_tokenizer_for_training(model, decoder_type)
    target_keep_ratio = check_target_keep_ratio(target_keep_ratio)
    _check_positive(num_steps=num_steps, learning_rate=learning_rate, log_every=log_every)
    if dead_code_threshold is not None and dead_code_threshold < 1:
        raise ValueError(f"dead_code_threshold must be None or >= 1, got {dead_code_threshold}.")
    usage_window = usage_window or dead_code_threshold or 20
    if isinstance(save_steps, bool) or not isinstance(save_steps, int) or save_steps < 0:
        raise ValueError(f"save_steps must be an int >= 0, got {save_steps!r}.")
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if save_steps and checkpoint_dir is None:
        raise ValueError("save_steps > 0 needs a checkpoint_dir to write the checkpoints to.")
    resume_path = _resolve_resume(checkpoint_dir, resume_from_checkpoint)
    if resume_path is None and tokenizer_checkpoints(checkpoint_dir):
        raise FileExistsError(
            f"{checkpoint_dir} already holds checkpoints of an earlier run ({tokenizer_checkpoints(checkpoint_dir)[-1].name}); "
            "resume it (resume_from_checkpoint=True, `--resume last`) or choose another folder."
        )
    extra = []
    if object_ids is not None and code_labels is None:
        raise ValueError("object_ids mark which kept tokens carry an object's class: they need code_labels.")
    for name, tensor in (("keep_targets", keep_targets), ("code_labels", code_labels), ("object_ids", object_ids)):
        if tensor is None:
            continue
        if not isinstance(pixel_values_or_dataloader, torch.Tensor):
            raise TypeError(f"{name} needs pixel values as a tensor (not a data loader).")
        tensor = tensor.reshape(tensor.shape[0], -1)
        if tensor.shape[1] != model.config.num_patches:
            raise ValueError(
                f"{name} hold {tensor.shape[1]} patches per image; the model has {model.config.num_patches}."
            )
        extra.append(tensor)
    if code_labels is not None and num_code_classes is None:
        num_code_classes = int(code_labels.max()) + 1
    if code_labels is None:
        code_classification_weight = 0.0
    objective = TokenizerObjective(
        model,
        decoder_type,
        target_keep_ratio,
        reconstruction_weight=reconstruction_weight,
        codebook_weight=codebook_weight,
        commitment_weight=commitment_weight,
        keep_ratio_weight=keep_ratio_weight,
        selector_entropy_weight=selector_entropy_weight,
        selector_supervision_weight=selector_supervision_weight if keep_targets is not None else 0.0,
        keep_target_positive_weight=keep_target_positive_weight,
        code_classification_weight=code_classification_weight,
        num_code_classes=num_code_classes if code_labels is not None else None,
        teacher_forced_selection=teacher_forced_selection,
        duplicate_label=duplicate_label,
    )

    original_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    for module in (model.token_selector, model.token_merger, model.quantizer, model.decoders[decoder_type]):
        module.requires_grad_(True)
    model.encoder.requires_grad_(not freeze_encoder)
    model.train()
    if freeze_encoder:
        model.encoder.eval()
    else:
        logger.warning("freeze_encoder=False: the encoder trains on its own (detached) features as the target.")

    codebook_weight_param = model.quantizer.codebook.weight
    others = [p for p in model.parameters() if p.requires_grad and p is not codebook_weight_param]
    if objective.code_probe is not None:
        others += list(objective.code_probe.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": others, "weight_decay": weight_decay},
            {"params": [codebook_weight_param], "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    parameters = others + [codebook_weight_param]
    data = pixel_values_or_dataloader
    device = model.device
    if accelerator is not None:
        if isinstance(data, torch.utils.data.DataLoader):
            objective, optimizer, data = accelerator.prepare(objective, optimizer, data)
        else:
            objective, optimizer = accelerator.prepare(objective, optimizer)
        device = accelerator.device
    distributed = accelerator is not None and accelerator.num_processes > 1
    scheduler = _scheduler(optimizer, lr_scheduler_type, num_steps, warmup_steps)

    cpu_generator = torch.Generator().manual_seed(seed)
    sample_generator = torch.Generator(device=device).manual_seed(seed)
    batches = _batches(data, batch_size, cpu_generator, *extra)
    codebook_size = model.config.codebook_size
    steps_since_used = torch.zeros(codebook_size, dtype=torch.long)
    last_used = torch.full((codebook_size,), -1, dtype=torch.long)
    history = TrainingHistory(target_keep_ratio=target_keep_ratio, usage_window=usage_window)
    probe = _unwrap(objective).code_probe

    start_step = 0
    if resume_path is not None:
        state = _load_checkpoint(resume_path, model)
        start_step = int(state["step"])
        if start_step > num_steps:
            raise ValueError(f"{resume_path} is at step {start_step}, beyond num_steps={num_steps}.")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        cpu_generator.set_state(state["cpu_generator"])
        sample_generator.set_state(state["sample_generator"])
        torch.set_rng_state(state["torch_rng"])
        steps_since_used.copy_(state["steps_since_used"])
        last_used.copy_(state["last_used"])
        for name in _HISTORY_LISTS:
            setattr(history, name, list(state["history"][name]))
        if probe is not None and state.get("code_probe") is not None:
            probe.load_state_dict(state["code_probe"])
        logger.info(f"Resumed tokenizer training from {resume_path} (step {start_step}).")

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "cpu_generator": cpu_generator.get_state(),
            "sample_generator": sample_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "steps_since_used": steps_since_used.clone(),
            "last_used": last_used.clone(),
            "history": {name: list(getattr(history, name)) for name in _HISTORY_LISTS},
            "code_probe": probe.state_dict() if probe is not None else None,
        }

    progress = _progress(num_steps, "tokenizer", accelerator, progress_bar, start=start_step)
    for step in progress:
        pixels, *targets = next(batches)
        pixels = pixels.to(device=device, dtype=model.dtype)
        targets = [target.to(device) for target in targets]
        batch_keep = targets.pop(0) if keep_targets is not None else None
        batch_labels = targets.pop(0) if code_labels is not None else None
        batch_objects = targets.pop(0) if object_ids is not None else None
        losses, output = objective(
            pixels, sample_generator, keep_targets=batch_keep, code_labels=batch_labels, object_ids=batch_objects
        )
        _backward_and_step(losses.loss, parameters, optimizer, accelerator, max_grad_norm)
        scheduler.step()
        normalize_codebook_(model)

        counts = code_usage_counts(output.token_ids, output.attention_mask, codebook_size)
        if distributed:
            counts = accelerator.reduce(counts.to(device), reduction="sum")
        used = counts.cpu() > 0
        steps_since_used += 1
        steps_since_used[used] = 0
        last_used[used] = step
        restarted = 0
        if dead_code_threshold is not None:
            recent = output.quantizer_inputs.detach()[output.attention_mask.bool()]
            dead = restart_dead_codes_(model, steps_since_used, recent, dead_code_threshold, cpu_generator)
            restarted = int(dead.numel())
            if restarted:
                _reset_optimizer_rows(optimizer, codebook_weight_param, dead)
                if distributed:
                    from accelerate.utils import broadcast

                    with torch.no_grad():
                        codebook_weight_param.copy_(broadcast(codebook_weight_param.data, from_process=0))

        history.loss.append(float(losses.loss.detach()))
        history.reconstruction.append(float(losses.reconstruction.detach()))
        history.codebook.append(float(losses.codebook.detach()))
        history.commitment.append(float(losses.commitment.detach()))
        history.keep_ratio_penalty.append(float(losses.keep_ratio_penalty.detach()))
        history.selector_entropy.append(float(losses.selector_entropy.detach()))
        history.keep_ratio.append(float(losses.keep_ratio))
        history.hard_keep_ratio.append(float(losses.hard_keep_ratio))
        history.codebook_usage.append(float(((last_used >= 0) & (step - last_used < usage_window)).float().mean()))
        history.perplexity.append(code_perplexity(counts.cpu()))
        history.restarted_codes.append(restarted)
        history.selector_supervision.append(float(losses.selector_supervision.detach()))
        history.code_classification.append(float(losses.code_classification.detach()))
        history.code_accuracy.append(float(losses.code_accuracy))
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            summary = {
                "recon": f"{history.reconstruction[-1]:.4f}",
                "keep": f"{history.hard_keep_ratio[-1]:.3f}",
                "usage": f"{history.codebook_usage[-1]:.3f}",
            }
            if keep_targets is not None:
                summary["sel"] = f"{history.selector_supervision[-1]:.3f}"
            if code_labels is not None:
                summary["code_acc"] = f"{history.code_accuracy[-1]:.3f}"
            progress.set_postfix(summary)
            logger.info(f"tokenizer step {step + 1}/{num_steps}: {summary}")
        if callback is not None:
            callback(step + 1, history)
        if save_steps and (step + 1) % save_steps == 0:
            if accelerator is None or accelerator.is_main_process:
                _save_checkpoint(checkpoint_dir, step + 1, _unwrap(model), checkpoint_state(step + 1))
            if accelerator is not None:
                accelerator.wait_for_everyone()

    model.eval()
    for name, param in model.named_parameters():
        param.requires_grad_(original_flags[name])
    if objective is not None:
        probe = _unwrap(objective).code_probe
        history.code_probe = probe.eval() if probe is not None else None
    return history


def _reset_optimizer_rows(optimizer, parameter: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero Adam's moment estimates of the restarted codebook rows (a fresh code should not inherit momentum)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    state = inner.state.get(parameter, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][rows.to(state[key].device)] = 0


@torch.no_grad()
def evaluate_tokenizer(
    model: GVTVisionTokenizer,
    pixel_values: torch.Tensor,
    decoder_type: str = "highres",
    batch_size: int = 16,
    selection: str = "deterministic",
    seed: int = 0,
) -> TokenizerEvaluation:
    """Reconstruction, keep ratio and codebook usage of `model` on `pixel_values`, in eval mode, with the
    deterministic keep decision or (`selection="sample"`, LaVIT's inference) Gumbel samples seeded by `seed`."""
    check_tokenizer_for_training(model, decoder_type)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    reconstruction, kept, patches, tokens = 0.0, 0, 0, 0
    counts = torch.zeros(model.config.codebook_size, dtype=torch.long)
    for start in range(0, pixel_values.shape[0], batch_size):
        pixels = pixel_values[start : start + batch_size].to(device=model.device, dtype=model.dtype)
        output = model(pixels, selection=selection, generator=generator)
        decoded = model.decoders[decoder_type](output.quantized, output.attention_mask).decoded_features
        loss = feature_reconstruction_loss(decoded, output.encoder_hidden_states[:, 1:])
        reconstruction += float(loss) * pixels.shape[0]
        kept += int(output.keep_mask.sum())
        patches += output.keep_mask.numel()
        tokens += int(output.attention_mask.sum())
        counts += code_usage_counts(output.token_ids, output.attention_mask, counts.shape[0]).cpu()
    for module, mode in modes.items():
        module.training = mode
    count = pixel_values.shape[0]
    return TokenizerEvaluation(
        reconstruction=reconstruction / count,
        keep_ratio=kept / max(patches, 1),
        codebook_usage=float((counts > 0).float().mean()),
        perplexity=code_perplexity(counts),
        tokens_per_image=tokens / count,
    )


# ------------------------------------------------------------------------------------------------------------------
# Encoder objectives: patch-label pretraining, GVT patch distillation
# ------------------------------------------------------------------------------------------------------------------


def _encoder_of(model: nn.Module) -> nn.Module:
    model = _unwrap(model)
    return model.encoder if isinstance(model, GVTVisionTokenizer) else model


def encoder_patch_features(
    model: nn.Module, pixel_values: torch.Tensor, num_patches: int | None = None
) -> torch.Tensor:
    """Patch features `[B, N, D]` of an encoder: a [`GVTVisionTokenizer`] (its encoder), a `GVTVisionEncoder`, or any
    module returning `[B, N, D]` (or a `ModelOutput` with `last_hidden_state`). When `num_patches` is given and the
    output has one more token, the first (CLS) is dropped."""
    module = _encoder_of(model)
    features = module(pixel_values)
    if isinstance(features, ModelOutput):
        features = features.last_hidden_state
    elif isinstance(features, (tuple, list)):
        features = features[0]
    if isinstance(module, GVTVisionEncoder):
        return features[:, 1:]
    if features.ndim != 3:
        raise ValueError(f"Expected patch features of shape [batch, patches, width], got {tuple(features.shape)}.")
    if num_patches is not None:
        if features.shape[1] == num_patches + 1:
            features = features[:, 1:]
        elif features.shape[1] != num_patches:
            raise ValueError(f"Expected {num_patches} patch features (or one more with CLS), got {features.shape[1]}.")
    return features


class _PatchClassifier(nn.Module):
    """An encoder and a LayerNorm + linear head over its patch tokens."""

    def __init__(self, encoder: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(encoder_patch_features(self.encoder, pixel_values))


def pretrain_encoder_on_patch_labels(
    model: nn.Module,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    num_classes: int | None = None,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    lr_scheduler_type: str = "constant",
    warmup_steps: int = 0,
    seed: int = 0,
    log_every: int = 25,
    progress_bar: bool = True,
    accelerator=None,
) -> PatchPretrainingOutput:
    """Train an encoder (a [`GVTVisionTokenizer`]'s, or a `GVTVisionEncoder`) in place to classify every patch, with
    a LayerNorm + linear head on its patch tokens and cross-entropy over all patches.

    Args:
        pixel_values: normalised images `[M, C, H, W]`.
        labels: per-patch class ids `[M, grid, grid]` or `[M, num_patches]` (e.g. `gvt.data.patch_labels`).
        num_classes: default `labels.max() + 1`.
        lr_scheduler_type, warmup_steps: a `transformers` schedule name ("constant", "cosine", ...) and its warm-up.

    Returns:
        [`PatchPretrainingOutput`] with per-step losses and patch accuracies, and the trained head. The encoder is left
        in eval mode with `requires_grad` as before.
    """
    _check_positive(num_steps=num_steps, learning_rate=learning_rate, log_every=log_every)
    encoder = _encoder_of(model)
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError("pixel_values must be a tensor of shape [images, channels, height, width].")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64):
        raise TypeError("labels must be an integer tensor of per-patch class ids.")
    labels = labels.reshape(labels.shape[0], -1).long()
    if labels.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"Got {pixel_values.shape[0]} images but {labels.shape[0]} label maps.")
    if labels.numel() == 0 or labels.min() < 0:
        raise ValueError("labels must be non-negative class ids.")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.max() >= num_classes:
        raise ValueError(f"labels hold class {int(labels.max())} but num_classes is {num_classes}.")
    with torch.no_grad():
        probe = encoder_patch_features(encoder, pixel_values[:1].to(next(encoder.parameters()).device))
    if probe.shape[1] != labels.shape[1]:
        raise ValueError(f"The encoder gives {probe.shape[1]} patches per image but labels hold {labels.shape[1]}.")

    original_flags = {name: p.requires_grad for name, p in encoder.named_parameters()}
    classifier = _PatchClassifier(encoder, probe.shape[-1], num_classes).to(probe.device)
    classifier.requires_grad_(True).train()
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    device = probe.device
    if accelerator is not None:
        classifier, optimizer = accelerator.prepare(classifier, optimizer)
        device = accelerator.device
    scheduler = _scheduler(optimizer, lr_scheduler_type, num_steps, warmup_steps)
    batches = _batches(pixel_values, batch_size, torch.Generator().manual_seed(seed), labels)
    history = PatchPretrainingOutput()
    progress = _progress(num_steps, "patch pretraining", accelerator, progress_bar)
    for step in progress:
        pixels, targets = next(batches)
        pixels, targets = pixels.to(device), targets.to(device)
        logits = classifier(pixels)
        loss = nn.functional.cross_entropy(logits.reshape(-1, num_classes).float(), targets.reshape(-1))
        _backward_and_step(loss, parameters, optimizer, accelerator, max_grad_norm)
        scheduler.step()
        history.losses.append(float(loss.detach()))
        history.accuracies.append(float((logits.detach().argmax(dim=-1) == targets).float().mean()))
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            summary = {"loss": f"{history.losses[-1]:.4f}", "acc": f"{history.accuracies[-1]:.3f}"}
            progress.set_postfix(summary)
            logger.info(f"patch pretraining step {step + 1}/{num_steps}: {summary}")
    classifier = _unwrap(classifier)
    classifier.eval()
    for name, param in encoder.named_parameters():
        param.requires_grad_(original_flags[name])
    history.head = classifier.head
    return history


class _DistillationStudent(nn.Module):
    """A student encoder and the linear head mapping its patch features to the teacher's width."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(encoder_patch_features(self.encoder, pixel_values))


def train_patch_distillation(
    student: nn.Module,
    teacher: nn.Module,
    pixel_values_or_dataloader: torch.Tensor | Iterable[Any],
    *,
    num_steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 8,
    loss_type: DistillationLossType = "cosine",
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    log_every: int = 25,
    progress_bar: bool = True,
    accelerator=None,
) -> PatchDistillationOutput:
    """GVT's patch-level feature distillation: the student encoder (a [`GVTVisionTokenizer`]'s, or a
    `GVTVisionEncoder`) regresses a frozen teacher's patch features at every position, no masking.

    The teacher is any module mapping the same pixels to `[B, N, D_t]` (a CLS token first is dropped); if
    `D_t` differs from the student width, a linear head (trained along) maps the student to the teacher's width.
    The student is left in eval mode with `requires_grad` as before; the teacher is never updated.
    """
    _check_positive(num_steps=num_steps, learning_rate=learning_rate, log_every=log_every)
    if loss_type not in ("cosine", "smooth_l1"):
        raise ValueError(f"loss_type must be 'cosine' or 'smooth_l1', got {loss_type!r}.")
    encoder = _encoder_of(student)
    device = next(encoder.parameters()).device
    cpu_generator = torch.Generator().manual_seed(seed)
    batches = _batches(pixel_values_or_dataloader, batch_size, cpu_generator)
    (probe_pixels,) = next(batches)
    teacher_flags = {name: p.requires_grad for name, p in teacher.named_parameters()}
    teacher.requires_grad_(False)
    teacher_was_training = teacher.training
    teacher.eval()
    with torch.no_grad():
        student_probe = encoder_patch_features(encoder, probe_pixels[:1].to(device))
        teacher_probe = encoder_patch_features(teacher, probe_pixels[:1].to(device), student_probe.shape[1])
    student_width, teacher_width = student_probe.shape[-1], teacher_probe.shape[-1]
    head = nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width).to(device)
    model = _DistillationStudent(encoder, head)
    original_flags = {name: p.requires_grad for name, p in encoder.named_parameters()}
    model.requires_grad_(True).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
        teacher.to(device)
        if isinstance(pixel_values_or_dataloader, torch.utils.data.DataLoader):
            batches = _batches(accelerator.prepare(pixel_values_or_dataloader), batch_size, cpu_generator)

    history = PatchDistillationOutput()
    progress = _progress(num_steps, "patch distillation", accelerator, progress_bar)
    for step in progress:
        (pixels,) = next(batches)
        pixels = pixels.to(device)
        with torch.no_grad():
            target = encoder_patch_features(teacher, pixels, student_probe.shape[1])
        losses: PatchDistillationLossOutput = patch_distillation_loss(model(pixels), target, loss_type)
        _backward_and_step(losses.loss, parameters, optimizer, accelerator, max_grad_norm)
        history.losses.append(float(losses.loss.detach()))
        history.cosine_similarities.append(float(losses.cosine_similarity))
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            summary = {"loss": f"{history.losses[-1]:.4f}", "cos": f"{history.cosine_similarities[-1]:.3f}"}
            progress.set_postfix(summary)
            logger.info(f"patch distillation step {step + 1}/{num_steps}: {summary}")
    model = _unwrap(model)
    model.eval()
    for name, param in encoder.named_parameters():
        param.requires_grad_(original_flags[name])
    for name, param in teacher.named_parameters():
        param.requires_grad_(teacher_flags[name])
    teacher.train(teacher_was_training)
    history.head = model.head
    return history


__all__ = [
    "TrainingHistory",
    "TokenizerEvaluation",
    "TokenizerObjective",
    "PatchPretrainingOutput",
    "PatchDistillationOutput",
    "check_tokenizer_for_training",
    "train_tokenizer",
    "tokenizer_checkpoints",
    "evaluate_tokenizer",
    "encoder_patch_features",
    "pretrain_encoder_on_patch_labels",
    "train_patch_distillation",
]
