"""ETT (end-to-end tokenizer tuning) for `transformers.Trainer`: the stage schedule as a callback.

- Stage 1, alignment: only the `"codebook"` projector trains.
- Stage 2, joint (from `unfreeze_step` / `unfreeze_epoch`): the tokenizer (token selector, merger, quantizer with its
  codebook, and the feature decoder of the reconstruction term) and the language model (or, for a peft model, its
  LoRA adapters) train too; [`LaVITForCausalLM.forward`] then returns `L_caption + alpha * L_reconstruction`
  (alpha = `config.ett_reconstruction_weight`, 0.25 by default). The codebook rows are re-normalised after every
  optimizer step, as in tokenizer training.
- Stage 3, optional (from `refreeze_step` / `refreeze_epoch`): the tokenizer is frozen again.

How it stays exact: every parameter that will ever train gets `requires_grad=True` before the Trainer builds its
optimizer (the callback does it in `on_init_end`, i.e. when passed as `Trainer(callbacks=[...])`, or call
[`prepare_ett_model`] yourself), so the optimizer holds them from the start; the callback then freezes the ones the
current stage does not train (`requires_grad=False`, `.grad=None`), and AdamW skips parameters without a gradient, so
they stay bit-identical until their stage. The stage is a function of the global step (or epoch), re-applied in
`on_train_begin`, so `trainer.train(resume_from_checkpoint=...)` continues in the right stage with the right trainable
set (`requires_grad` is not checkpointed); the callback's state is also saved in checkpoints (`ExportableState`,
restored with `TrainingArguments(restore_callback_states_from_checkpoint=True)`). Stage changes are logged
(`logger.info` and an `{"ett_stage": ...}` entry in `state.log_history`).

Under DDP, keep `ddp_find_unused_parameters` at its default (True for models without gradient checkpointing): frozen
parameters produce no gradient in stage 1.
"""

from __future__ import annotations

import math

from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from .losses import normalize_codebook_

logger = logging.get_logger(__name__)

STAGE_NAMES = {1: "alignment (projector)", 2: "joint (projector + tokenizer + language model)", 3: "tokenizer frozen"}
TOKENIZER_PARTS = ("token_selector", "token_merger", "quantizer")


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def _lavit_model(model: nn.Module) -> nn.Module:
    """The [`LaVITForCausalLM`] inside DDP / peft wrappers."""
    model = _unwrap(model)
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        model = get_base()
    if not hasattr(model, "vision_tokenizer") or not hasattr(model, "codebook_projector"):
        raise TypeError(f"ETT needs a LaVITForCausalLM (or a peft model of one), got {type(model).__name__}.")
    if model.config.image_input_mode != "codebook" or model.codebook_projector is None:
        raise ValueError(
            f"ETT trains the codebook projector: the model needs config.image_input_mode='codebook', got "
            f"{model.config.image_input_mode!r}."
        )
    return model


def ett_parameter_groups(
    model: nn.Module,
    train_encoder: bool = False,
    decoder_type: str | None = None,
    train_selector: bool = True,
    train_tokenizer: bool = True,
) -> dict[str, dict[str, nn.Parameter]]:
    """The parameters ETT manages, by role: `"projector"`, `"tokenizer"` (selector, merger, quantizer + codebook, the
    reconstruction decoder; the encoder too with `train_encoder`, the selector not with `train_selector=False`, none
    with `train_tokenizer=False`), and `"language_model"` (the LoRA adapters when the model is a peft model with any,
    else every language-model parameter). Names are those of `model` as given (peft / DDP prefixes included); the
    frozen originals of peft's `modules_to_save` copies are left out."""
    lavit = _lavit_model(model)
    if decoder_type is None and train_tokenizer:
        decoder_type = lavit.ett_decoder_type() if lavit.config.ett_reconstruction_weight > 0 else None
    tokenizer_parts = []
    if train_tokenizer:
        tokenizer_parts = [part for part in TOKENIZER_PARTS if train_selector or part != "token_selector"]
        tokenizer_parts += [f"decoders.{decoder_type}"] if decoder_type else []
        tokenizer_parts += ["encoder"] if train_encoder else []
    named = [(name, p) for name, p in model.named_parameters() if "original_module" not in name.split(".")]
    has_lora = any("lora_" in name for name, _ in named)
    groups: dict[str, dict[str, nn.Parameter]] = {"projector": {}, "tokenizer": {}, "language_model": {}}
    for name, param in named:
        padded = f".{name}."
        if ".codebook_projector." in padded:
            groups["projector"][name] = param
        elif any(f".vision_tokenizer.{part}." in padded for part in tokenizer_parts):
            groups["tokenizer"][name] = param
        elif has_lora and "lora_" in name:
            groups["language_model"][name] = param
        elif not has_lora and ".language_model." in padded:
            groups["language_model"][name] = param
    return groups


def prepare_ett_model(
    model: nn.Module,
    train_encoder: bool = False,
    train_language_model: bool = True,
    train_selector: bool = True,
    train_tokenizer: bool = True,
) -> nn.Module:
    """Set `requires_grad=True` on every parameter some ETT stage trains and `False` on all others, so that the
    optimizer the Trainer builds holds all of them from the start. Returns `model`. [`ETTCallback`] calls it in
    `on_init_end`; call it yourself when you add the callback after the Trainer was built."""
    groups = ett_parameter_groups(
        model, train_encoder=train_encoder, train_selector=train_selector, train_tokenizer=train_tokenizer
    )
    trained = {id(p) for name in _groups_of_stage(2, train_language_model) for p in groups[name].values()}
    if not groups["projector"]:
        raise ValueError("The model has no trainable codebook projector parameters.")
    for param in model.parameters():
        param.requires_grad_(id(param) in trained)
    lavit = _lavit_model(model)
    if lavit is not _unwrap(model) and any(
        ".modules_to_save." not in name for name in groups["projector"]
    ):  # a peft model whose projector was not put in modules_to_save
        logger.warning(
            "The codebook projector (and tokenizer) train but are not in the peft model's modules_to_save: they will "
            "not be saved with the adapter. Pass modules_to_save=['codebook_projector', ...] to the LoraConfig."
        )
    return model


def _groups_of_stage(stage: int, train_language_model: bool) -> tuple[str, ...]:
    llm = ("language_model",) if train_language_model else ()
    if stage == 1:
        return ("projector",)
    if stage == 2:
        return ("projector", "tokenizer", *llm)
    return ("projector", *llm)


def _optimizer_parameter_ids(optimizer) -> set[int]:
    return {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}


class ETTCallback(TrainerCallback, ExportableState):
    r"""
    The ETT stage schedule (see the module docstring). Give `unfreeze_step` or `unfreeze_epoch`, optionally
    `refreeze_step` or `refreeze_epoch` for stage 3.

    Args:
        unfreeze_step (`int`): stage 2 starts after this many optimizer steps: the tokenizer is bit-identical through
            step `unfreeze_step` and changes from step `unfreeze_step + 1` on. 0 starts in stage 2.
        unfreeze_epoch (`int`): stage 2 starts with this (0-based) epoch instead.
        refreeze_step / refreeze_epoch (`int`, *optional*): stage 3 (tokenizer frozen again) from this step / epoch.
        train_language_model (`bool`): stage 2 and 3 also train the language model (its LoRA adapters for a peft
            model); `False` keeps it frozen throughout.
        train_encoder (`bool`): also unfreeze the tokenizer's encoder in stage 2 (its detached output stays the
            reconstruction target, which then moves; LaVIT keeps it frozen).
        train_selector (`bool`): `False` keeps the token selector as it is (the merger, quantizer and feature decoder
            still train); the model then selects deterministically in stage 2 too, so the language model reads the
            tokens it will read at inference.
        train_tokenizer (`bool`): `False` never unfreezes the tokenizer: stage 2 trains the projector and the
            language model on the frozen tokenizer's codebook embeddings (the frozen-tokenizer baseline of ETT).
        normalize_codebook (`bool`): re-normalise the codebook rows after each optimizer step while the tokenizer
            trains.
        stage (`int`): the current stage (restored from checkpoints; you do not set it).

    Example:
        ```python
        model, processor = build_tiny_random("codebook", vision_config={"decoder_output_dim": 64})
        trainer = Trainer(
            model=model,
            args=TrainingArguments("out", max_steps=100, remove_unused_columns=False,
                                   restore_callback_states_from_checkpoint=True),
            train_dataset=rows,
            data_collator=GVTDataCollator(processor),
            callbacks=[ETTCallback(unfreeze_step=50)],
        )
        trainer.train()
        ```
    """

    def __init__(
        self,
        unfreeze_step: int | None = None,
        unfreeze_epoch: int | None = None,
        refreeze_step: int | None = None,
        refreeze_epoch: int | None = None,
        train_language_model: bool = True,
        train_encoder: bool = False,
        normalize_codebook: bool = True,
        stage: int = 1,
        train_selector: bool = True,
        train_tokenizer: bool = True,
    ):
        if (unfreeze_step is None) == (unfreeze_epoch is None):
            raise ValueError("Give exactly one of unfreeze_step and unfreeze_epoch.")
        if refreeze_step is not None and refreeze_epoch is not None:
            raise ValueError("Give at most one of refreeze_step and refreeze_epoch.")
        for name, value in (
            ("unfreeze_step", unfreeze_step),
            ("unfreeze_epoch", unfreeze_epoch),
            ("refreeze_step", refreeze_step),
            ("refreeze_epoch", refreeze_epoch),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        if refreeze_step is not None and unfreeze_step is not None and refreeze_step <= unfreeze_step:
            raise ValueError(f"refreeze_step ({refreeze_step}) must come after unfreeze_step ({unfreeze_step}).")
        if refreeze_epoch is not None and unfreeze_epoch is not None and refreeze_epoch <= unfreeze_epoch:
            raise ValueError(f"refreeze_epoch ({refreeze_epoch}) must come after unfreeze_epoch ({unfreeze_epoch}).")
        if stage not in STAGE_NAMES:
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}.")
        self.unfreeze_step = unfreeze_step
        self.unfreeze_epoch = unfreeze_epoch
        self.refreeze_step = refreeze_step
        self.refreeze_epoch = refreeze_epoch
        self.train_language_model = train_language_model
        self.train_encoder = train_encoder
        self.train_selector = train_selector
        self.train_tokenizer = train_tokenizer
        self.normalize_codebook = normalize_codebook
        self.stage = stage
        self._applied: int | None = None
        self._groups: dict[str, dict[str, nn.Parameter]] | None = None

    # -- ExportableState -----------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "args": {
                "unfreeze_step": self.unfreeze_step,
                "unfreeze_epoch": self.unfreeze_epoch,
                "refreeze_step": self.refreeze_step,
                "refreeze_epoch": self.refreeze_epoch,
                "train_language_model": self.train_language_model,
                "train_encoder": self.train_encoder,
                "train_selector": self.train_selector,
                "train_tokenizer": self.train_tokenizer,
                "normalize_codebook": self.normalize_codebook,
            },
            "attributes": {"stage": self.stage},
        }

    # -- the schedule --------------------------------------------------------------------------------------------------

    @staticmethod
    def _reached(step_threshold: int | None, epoch_threshold: int | None, step: int, epoch: int) -> bool:
        if step_threshold is not None:
            return step >= step_threshold
        return epoch_threshold is not None and epoch >= epoch_threshold

    def stage_at(self, global_step: int, epoch: float | None = 0.0) -> int:
        """The stage of the optimizer step that follows `global_step` completed steps (in epoch `floor(epoch)`)."""
        epoch_index = math.floor((epoch or 0.0) + 1e-9)
        if self._reached(self.refreeze_step, self.refreeze_epoch, global_step, epoch_index):
            return 3
        if self._reached(self.unfreeze_step, self.unfreeze_epoch, global_step, epoch_index):
            return 2
        return 1

    def _check_schedule(self, state) -> None:
        max_steps = state.max_steps
        for name in ("unfreeze_step", "refreeze_step"):
            value = getattr(self, name)
            if value is not None and max_steps and max_steps > 0 and value >= max_steps:
                raise ValueError(
                    f"ETTCallback: {name}={value} is past the end of training ({max_steps} optimizer steps): that "
                    "stage would never run. Lower it or train longer."
                )
        num_epochs = getattr(state, "num_train_epochs", None)
        for name in ("unfreeze_epoch", "refreeze_epoch"):
            value = getattr(self, name)
            if value is not None and num_epochs and value >= num_epochs:
                raise ValueError(
                    f"ETTCallback: {name}={value} is past the end of training ({num_epochs} epochs, 0-based): that "
                    "stage would never run."
                )

    def _apply(self, model: nn.Module, state, stage: int) -> None:
        groups = self._groups
        trained = {id(p) for name in _groups_of_stage(stage, self.train_language_model) for p in groups[name].values()}
        for group in groups.values():
            for param in group.values():
                trains = id(param) in trained
                param.requires_grad_(trains)
                if not trains:
                    param.grad = None
        if self._applied != stage:
            message = f"ETT stage {stage}: {STAGE_NAMES[stage]} from optimizer step {state.global_step + 1}"
            logger.info(message)
            state.log_history.append({"ett_stage": stage, "step": state.global_step, "epoch": state.epoch})
        self._applied = stage
        self.stage = stage

    def _update(self, model: nn.Module | None, state) -> None:
        if model is None or self._groups is None:
            return
        stage = self.stage_at(state.global_step, state.epoch)
        if stage != self._applied:
            self._apply(model, state, stage)

    # -- Trainer events ------------------------------------------------------------------------------------------------

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            prepare_ett_model(
                model, self.train_encoder, self.train_language_model, self.train_selector, self.train_tokenizer
            )

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            raise ValueError("ETTCallback needs the model (the Trainer passes it to callbacks).")
        self._check_schedule(state)
        self._groups = ett_parameter_groups(
            model,
            train_encoder=self.train_encoder,
            train_selector=self.train_selector,
            train_tokenizer=self.train_tokenizer,
        )
        if optimizer is not None:
            held = _optimizer_parameter_ids(optimizer)
            wanted = _groups_of_stage(2, self.train_language_model)
            missing = [name for group in wanted for name, p in self._groups[group].items() if id(p) not in held]
            if missing:
                raise ValueError(
                    f"The optimizer does not hold {len(missing)} parameter(s) that ETT stage 2 trains (e.g. "
                    f"{missing[0]!r}): pass ETTCallback in Trainer(callbacks=[...]) or call "
                    "gvt.training.ett.prepare_ett_model(model) before building the Trainer."
                )
        self._applied = None
        self._apply(model, state, self.stage_at(state.global_step, state.epoch))

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self._update(model, state)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._update(model, state)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.normalize_codebook and self.train_tokenizer and self._applied == 2 and model is not None:
            normalize_codebook_(_lavit_model(model).vision_tokenizer)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._groups = None


__all__ = ["ETTCallback", "prepare_ett_model", "ett_parameter_groups", "STAGE_NAMES"]
