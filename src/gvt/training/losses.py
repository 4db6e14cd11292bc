"""Losses of the visual tokenizer, as pure functions that return their parts by name.

- LaVIT stage 1 (tokenizer training): cosine reconstruction of the frozen encoder's patch features by a feature
  decoder that reads the *straight-through* code embeddings, VQ codebook and commitment terms, and a keep-ratio
  regulariser on the token selector ([`tokenizer_loss`]). These live in `gvt.tokenizer_objective` (the model
  computes them for ETT) and are re-exported here.
- GVT: patch-level feature distillation, a student regressing a teacher's patch features with no masking
  ([`patch_distillation_loss`]).
- Fine-grained supervision where labels exist (synthetic scenes): the token selector learns *which* patches to keep
  from per-patch keep targets ([`selector_supervision_loss`], e.g. the patch holding each object's centre), and the
  codes learn *what* they show from per-patch class labels through a linear probe on the code embeddings
  ([`code_classification_loss`]). Both are optional terms of [`tokenizer_loss`] (weight 0 by default). They answer
  two failure modes of the unsupervised objective on small data: the keep-ratio penalty alone drives every patch to
  the same keep probability (the deterministic rule then keeps all or nothing), and reconstruction alone lets the
  decoder settle on the mean feature while the codes carry nothing an LLM can count.

The codebook is learned by the codebook loss `||sg(z) - q||^2` (not by EMA updates): the trainer re-normalises the
codebook rows after every optimizer step ([`normalize_codebook_`]) and restarts dead codes ([`restart_dead_codes_`]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput, logging

# The tokenizer objective lives beside the models (LaVIT's forward computes it for ETT); re-exported here.
from ..tokenizer_objective import (
    TokenizerLossOutput,
    check_target_keep_ratio,
    code_classification_loss,
    codebook_losses,
    feature_reconstruction_loss,
    keep_ratio_loss,
    selector_entropy,
    selector_supervision_loss,
    straight_through_codes,
    tokenizer_loss,
)

logger = logging.get_logger(__name__)

DistillationLossType = Literal["cosine", "smooth_l1"]


@dataclass
class PatchDistillationLossOutput(ModelOutput):
    """Patch-level feature distillation loss.

    Args:
        loss: mean over all patches of the per-patch loss.
        cosine_similarity: mean cosine similarity between student and teacher patches, detached.
    """

    loss: torch.FloatTensor | None = None
    cosine_similarity: torch.FloatTensor | None = None


def patch_distillation_loss(
    student_patch_features: torch.Tensor,
    teacher_patch_features: torch.Tensor,
    loss_type: DistillationLossType = "cosine",
) -> PatchDistillationLossOutput:
    """GVT's patch-level feature distillation: every student patch `[B, N, D]` regresses the teacher's patch at the
    same position (no masking), with `1 - cos` or smooth-L1 per patch, averaged over all patches. The teacher is
    detached."""
    if student_patch_features.shape != teacher_patch_features.shape:
        raise ValueError(
            f"student patch features {tuple(student_patch_features.shape)} and teacher patch features "
            f"{tuple(teacher_patch_features.shape)} must have the same shape [batch, patches, width]; map the student "
            "to the teacher's width with a linear head first."
        )
    student = student_patch_features.float()
    teacher = teacher_patch_features.detach().float()
    cosine = F.cosine_similarity(student, teacher, dim=-1)
    if loss_type == "cosine":
        loss = (1.0 - cosine).mean()
    elif loss_type == "smooth_l1":
        loss = F.smooth_l1_loss(student, teacher, reduction="none").mean(dim=-1).mean()
    else:
        raise ValueError(f"loss_type must be 'cosine' or 'smooth_l1', got {loss_type!r}.")
    return PatchDistillationLossOutput(loss=loss, cosine_similarity=cosine.mean().detach())


# ------------------------------------------------------------------------------------------------------------------
# Codebook maintenance
# ------------------------------------------------------------------------------------------------------------------


def _codebook(model_or_codebook: nn.Module) -> nn.Embedding:
    """The codebook `nn.Embedding` of a tokenizer (possibly wrapped by DDP / accelerate) or the embedding itself."""
    module = getattr(model_or_codebook, "module", model_or_codebook)
    if isinstance(module, nn.Embedding):
        return module
    quantizer = getattr(module, "quantizer", None)
    if quantizer is None or not isinstance(getattr(quantizer, "codebook", None), nn.Embedding):
        raise ValueError(
            "Expected a discrete (tokenizer_type='lavit') GVTVisionTokenizer or its codebook nn.Embedding."
        )
    return quantizer.codebook


@torch.no_grad()
def normalize_codebook_(model_or_codebook: nn.Module) -> None:
    """Re-normalise the codebook rows to unit l2 norm, in place (call after every optimizer step)."""
    weight = _codebook(model_or_codebook).weight
    weight.copy_(F.normalize(weight.float(), p=2, dim=-1).to(weight.dtype))


@torch.no_grad()
def restart_dead_codes_(
    model_or_codebook: nn.Module,
    steps_since_used: torch.Tensor,
    recent_inputs: torch.Tensor,
    dead_code_threshold: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Re-initialise every code unused for at least `dead_code_threshold` steps to a random recent quantizer input.

    Args:
        steps_since_used (`[codebook_size]` integer): steps since each code was last assigned; reset to 0 for the
            restarted codes, in place.
        recent_inputs (`[M, codebook_dim]`): quantizer inputs of real tokens from recent batches; drawn without
            replacement when there are enough, l2-normalised.
        generator: a CPU generator, for reproducible draws.

    Returns:
        The indices of the restarted codes (`LongTensor`, possibly empty).
    """
    codebook = _codebook(model_or_codebook)
    if steps_since_used.shape != (codebook.num_embeddings,):
        raise ValueError(
            f"steps_since_used must have shape [{codebook.num_embeddings}], got {tuple(steps_since_used.shape)}."
        )
    if dead_code_threshold < 1:
        raise ValueError(f"dead_code_threshold must be >= 1, got {dead_code_threshold}.")
    dead = (steps_since_used >= dead_code_threshold).nonzero(as_tuple=True)[0]
    inputs = recent_inputs.reshape(-1, recent_inputs.shape[-1])
    if dead.numel() == 0 or inputs.shape[0] == 0:
        return dead[:0]
    if inputs.shape[-1] != codebook.embedding_dim:
        raise ValueError(f"recent_inputs have width {inputs.shape[-1]}, the codebook {codebook.embedding_dim}.")
    if inputs.shape[0] >= dead.numel():
        picks = torch.randperm(inputs.shape[0], generator=generator)[: dead.numel()]
    else:
        picks = torch.randint(inputs.shape[0], (dead.numel(),), generator=generator)
    new_rows = F.normalize(inputs[picks.to(inputs.device)].float(), p=2, dim=-1)
    weight = codebook.weight
    weight[dead.to(weight.device)] = new_rows.to(device=weight.device, dtype=weight.dtype)
    steps_since_used[dead] = 0
    return dead


def code_usage_counts(token_ids: torch.Tensor, attention_mask: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each code is assigned to a real token: `[codebook_size]` int64."""
    real = token_ids[attention_mask.bool()].long()
    return torch.bincount(real.flatten(), minlength=codebook_size)[:codebook_size]


def code_perplexity(counts: torch.Tensor) -> float:
    """`exp(entropy)` of the code distribution given by `counts` (1.0 for no or one used code)."""
    total = counts.sum()
    if total <= 0:
        return 1.0
    probs = counts.double() / total
    probs = probs[probs > 0]
    return float(torch.exp(-(probs * probs.log()).sum()))


def primary_token_labels(
    keep_mask: torch.Tensor, object_ids: torch.Tensor, code_labels: torch.Tensor, duplicate_label: int = 0
) -> torch.Tensor:
    """Per-patch code labels `[B, N]` that give each object's class to one kept token only: the first kept patch (in
    reading order) of the object's anchor set (`object_ids[b, n] == k`, -1 outside every set) keeps its label from
    `code_labels`; every other patch, kept or not, gets `duplicate_label`. Computed on the keep decision actually
    taken, so the merger learns to mark the extra tokens of an object whose centre lies near a patch border (see
    `gvt.data.patch_targets`) and the number of class codes stays the number of objects."""
    if not keep_mask.shape == object_ids.shape == code_labels.shape:
        raise ValueError(
            f"keep_mask {tuple(keep_mask.shape)}, object_ids {tuple(object_ids.shape)} and code_labels "
            f"{tuple(code_labels.shape)} must have the same [batch, patches] shape."
        )
    batch, patches = object_ids.shape
    object_ids = object_ids.long()
    anchored = keep_mask.bool() & (object_ids >= 0)
    slots = int(object_ids.max().clamp_min(0)) + 2  # one slot per object id, the last for "no object"
    slot = torch.where(anchored, object_ids, torch.full_like(object_ids, slots - 1))
    positions = torch.arange(patches, device=object_ids.device).expand(batch, patches)
    first = torch.full((batch, slots), patches, dtype=torch.long, device=object_ids.device)
    first = first.scatter_reduce(1, slot, positions, reduce="amin")
    primary = anchored & (positions == first.gather(1, slot))
    return torch.where(primary, code_labels.long(), torch.full_like(code_labels.long(), duplicate_label))


__all__ = [
    "primary_token_labels",
    "TokenizerLossOutput",
    "PatchDistillationLossOutput",
    "check_target_keep_ratio",
    "straight_through_codes",
    "feature_reconstruction_loss",
    "codebook_losses",
    "keep_ratio_loss",
    "selector_entropy",
    "selector_supervision_loss",
    "code_classification_loss",
    "tokenizer_loss",
    "patch_distillation_loss",
    "normalize_codebook_",
    "restart_dead_codes_",
    "code_usage_counts",
    "code_perplexity",
]
