"""Training in gvt: the tokenizer objective (LaVIT stage 1), LLM training with `Trainer`, ETT, and the detokenizer."""

from .arguments import TrainJobArguments
from .collator import GVTDataCollator
from .decoder_training import DecoderDenoiser, DecoderTrainingOutput, fit_vae, train_decoder
from .ett import ETTCallback, ett_parameter_groups, prepare_ett_model
from .fsdp import DEFAULT_FSDP_CONFIG, FSDPTrainer
from .llm_training import load_rows, make_lora_model, training_arguments
from .losses import (
    PatchDistillationLossOutput,
    TokenizerLossOutput,
    code_perplexity,
    code_usage_counts,
    codebook_losses,
    feature_reconstruction_loss,
    keep_ratio_loss,
    normalize_codebook_,
    patch_distillation_loss,
    primary_token_labels,
    restart_dead_codes_,
    straight_through_codes,
    tokenizer_loss,
)
from .tokenizer_training import (
    PatchPretrainingOutput,
    TokenizerEvaluation,
    TokenizerObjective,
    TrainingHistory,
    evaluate_tokenizer,
    pretrain_encoder_on_patch_labels,
    train_patch_distillation,
    train_tokenizer,
)

__all__ = [
    "GVTDataCollator",
    "TrainJobArguments",
    "FSDPTrainer",
    "DEFAULT_FSDP_CONFIG",
    "ETTCallback",
    "prepare_ett_model",
    "ett_parameter_groups",
    "training_arguments",
    "make_lora_model",
    "load_rows",
    "train_tokenizer",
    "TokenizerObjective",
    "TrainingHistory",
    "evaluate_tokenizer",
    "TokenizerEvaluation",
    "pretrain_encoder_on_patch_labels",
    "PatchPretrainingOutput",
    "train_patch_distillation",
    "tokenizer_loss",
    "TokenizerLossOutput",
    "feature_reconstruction_loss",
    "codebook_losses",
    "keep_ratio_loss",
    "straight_through_codes",
    "patch_distillation_loss",
    "PatchDistillationLossOutput",
    "normalize_codebook_",
    "primary_token_labels",
    "restart_dead_codes_",
    "code_usage_counts",
    "code_perplexity",
    "train_decoder",
    "fit_vae",
    "DecoderDenoiser",
    "DecoderTrainingOutput",
]
