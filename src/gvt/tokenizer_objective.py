"""LaVIT's tokenizer objective, as pure functions that return their parts by name.

The objective of LaVIT's stage 1 (tokenizer training) and of ETT's reconstruction term: cosine reconstruction of the
frozen encoder's patch features by a feature decoder that reads the *straight-through* code embeddings, VQ codebook
and commitment terms, and a keep-ratio regulariser on the token selector ([`tokenizer_loss`]). Optional fine-grained
supervision where labels exist (synthetic scenes): per-patch keep targets for the token selector
([`selector_supervision_loss`]) and per-token class labels through a linear probe on the code embeddings
([`code_classification_loss`]), both weight 0 by default.

It lives beside the models (not in `gvt.training`, which re-exports it) because [`LaVITForCausalLM`] computes ETT's
reconstruction term in its own forward: this file imports only torch and transformers, so it travels with the model
code into a Hub repo for `trust_remote_code=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput


@dataclass
class TokenizerLossOutput(ModelOutput):
    """The tokenizer objective and its parts (all scalars).

    Args:
        loss: the weighted sum that is back-propagated.
        reconstruction: `1 - cos(decoded, target)`, mean over patches.
        codebook: `||sg(z) - q||^2` per real token, mean (moves the codebook rows).
        commitment: `||z - sg(q)||^2` per real token, mean (moves the quantizer inputs), unweighted.
        keep_ratio_penalty: `(mean soft keep probability - target)^2`, mean over images, unweighted.
        selector_entropy: mean binary entropy (nats) of the per-patch keep probability, unweighted; weighting it
            makes the selector decisive, so that its deterministic decision (`p_keep >= 0.5`) keeps about the
            target ratio too, not only its samples.
        keep_ratio: the soft keep ratio (mean selector keep probability), detached.
        hard_keep_ratio: the share of patches actually kept, detached.
        selector_supervision: NLL of the selector against per-patch keep targets, unweighted (0 without targets).
        code_classification: cross-entropy of the code probe against the kept tokens' class labels, unweighted (0
            without labels).
        code_accuracy: accuracy of the code probe on the kept tokens, detached (0 without labels).
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codebook: torch.FloatTensor | None = None
    commitment: torch.FloatTensor | None = None
    keep_ratio_penalty: torch.FloatTensor | None = None
    selector_entropy: torch.FloatTensor | None = None
    keep_ratio: torch.FloatTensor | None = None
    hard_keep_ratio: torch.FloatTensor | None = None
    selector_supervision: torch.FloatTensor | None = None
    code_classification: torch.FloatTensor | None = None
    code_accuracy: torch.FloatTensor | None = None


def check_target_keep_ratio(target_keep_ratio: float) -> float:
    """Return `target_keep_ratio` as a float; raise a `ValueError` unless it lies in (0, 1]."""
    if isinstance(target_keep_ratio, bool) or not isinstance(target_keep_ratio, (int, float)):
        raise TypeError(f"target_keep_ratio must be a number in (0, 1], got {type(target_keep_ratio).__name__}.")
    if not 0.0 < float(target_keep_ratio) <= 1.0:
        raise ValueError(f"target_keep_ratio must lie in (0, 1], got {target_keep_ratio}.")
    return float(target_keep_ratio)


def straight_through_codes(quantizer_inputs: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """The VQ straight-through estimator `z + sg(q - z)`: the value of `q`, the gradient of `z`."""
    return quantizer_inputs + (quantized - quantizer_inputs).detach()


def feature_reconstruction_loss(decoded_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """`1 - cos` between decoded `[B, N, D]` and target `[B, N, D]` features, mean over all B * N patches."""
    if decoded_features.shape != target_features.shape:
        raise ValueError(
            f"decoded features {tuple(decoded_features.shape)} and target features {tuple(target_features.shape)} "
            "must have the same shape [batch, patches, width]: the feature decoder needs decoder_num_queries equal "
            "to the number of patches and decoder_output_dim equal to the encoder's hidden_size."
        )
    cosine = F.cosine_similarity(decoded_features.float(), target_features.float(), dim=-1)
    return (1.0 - cosine).mean()


def codebook_losses(
    quantizer_inputs: torch.Tensor, quantized: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook `||sg(z) - q||^2`, commitment `||z - sg(q)||^2`): squared distances summed over the code
    dimension, averaged over the real tokens (`attention_mask` `[B, L]`); zero when no token is real."""
    mask = attention_mask.to(torch.float32)
    count = mask.sum().clamp_min(1.0)
    z, q = quantizer_inputs.float(), quantized.float()
    codebook = ((z.detach() - q).pow(2).sum(dim=-1) * mask).sum() / count
    commitment = ((z - q.detach()).pow(2).sum(dim=-1) * mask).sum() / count
    return codebook, commitment


def keep_ratio_loss(selector_log_probs: torch.Tensor, target_keep_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, soft keep ratio): `(mean_n p_keep - target)^2` per image, averaged over the batch, with
    `p_keep = exp(selector_log_probs[..., 0])`, so the penalty has gradients even though the keep decision is hard."""
    target_keep_ratio = check_target_keep_ratio(target_keep_ratio)
    keep_probs = selector_log_probs[..., 0].float().exp()
    per_image = keep_probs.mean(dim=1)
    return (per_image - target_keep_ratio).pow(2).mean(), keep_probs.mean().detach()


def selector_entropy(selector_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy `-sum_c p_c log p_c` of the selector's keep / drop distribution over all patches."""
    log_probs = selector_log_probs.float()
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean()


def selector_supervision_loss(
    selector_log_probs: torch.Tensor, keep_targets: torch.Tensor, positive_weight: float = 1.0
) -> torch.Tensor:
    """Weighted NLL of the selector's keep / drop distribution `[B, N, 2]` against keep targets `[B, N]` (1 = keep).

    `positive_weight` scales the "keep" patches (they are rare in sparse scenes); the loss is the weighted mean, so its
    scale does not depend on how many patches are positive.
    """
    if keep_targets.shape != selector_log_probs.shape[:2]:
        raise ValueError(
            f"keep_targets must have shape {tuple(selector_log_probs.shape[:2])} (batch, patches), got "
            f"{tuple(keep_targets.shape)}."
        )
    if positive_weight <= 0:
        raise ValueError(f"positive_weight must be > 0, got {positive_weight}.")
    targets = keep_targets.float()
    log_probs = selector_log_probs.float()
    weights = positive_weight * targets + (1.0 - targets)
    nll = -(targets * log_probs[..., 0] + (1.0 - targets) * log_probs[..., 1])
    return (weights * nll).sum() / weights.sum().clamp_min(1e-6)


def code_classification_loss(
    code_logits: torch.Tensor, code_labels: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, accuracy) of a probe's logits `[B, L, C]` on the code embeddings against class labels `[B, L]`
    over the real tokens (`attention_mask` `[B, L]`; labels `< 0` are ignored too); zeros when no token counts."""
    if code_logits.shape[:2] != code_labels.shape or code_labels.shape != attention_mask.shape:
        raise ValueError(
            f"code_logits {tuple(code_logits.shape)}, code_labels {tuple(code_labels.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must agree on [batch, tokens]."
        )
    valid = attention_mask.bool() & (code_labels >= 0)
    if not bool(valid.any()):
        zero = code_logits.sum() * 0.0
        return zero, zero.detach()
    logits, labels = code_logits[valid].float(), code_labels[valid].long()
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().detach()
    return loss, accuracy


def tokenizer_loss(
    output,
    decoded_features: torch.Tensor,
    target_features: torch.Tensor,
    target_keep_ratio: float,
    reconstruction_weight: float = 1.0,
    codebook_weight: float = 1.0,
    commitment_weight: float = 0.25,
    keep_ratio_weight: float = 2.0,
    selector_entropy_weight: float = 0.0,
    keep_targets: torch.Tensor | None = None,
    selector_supervision_weight: float = 0.0,
    keep_target_positive_weight: float = 1.0,
    code_logits: torch.Tensor | None = None,
    code_labels: torch.Tensor | None = None,
    code_classification_weight: float = 0.0,
) -> TokenizerLossOutput:
    """LaVIT's tokenizer objective, optionally with fine-grained supervision.

    Args:
        output ([`GVTVisionTokenizerOutput`]): a forward pass of the tokenizer (`quantizer_inputs`, `quantized`,
            `attention_mask`, `selector_log_probs`, `keep_mask`).
        decoded_features (`[B, N, D]`): the feature decoder's `decoded_features`, computed from
            [`straight_through_codes`] of the same output.
        target_features (`[B, N, D]`): the frozen encoder's patch features (CLS dropped).
        target_keep_ratio: the share of patches the selector should keep, in (0, 1].
        keep_targets (`[B, N]`, *optional*): per-patch keep targets for [`selector_supervision_loss`], weighted by
            `selector_supervision_weight` (`keep_target_positive_weight` on the positives).
        code_logits (`[B, L, C]`), code_labels (`[B, L]`), *optional*: a probe's logits on the kept tokens' code
            embeddings and their class labels, for [`code_classification_loss`] weighted by
            `code_classification_weight`.
    """
    reconstruction = feature_reconstruction_loss(decoded_features, target_features)
    codebook, commitment = codebook_losses(output.quantizer_inputs, output.quantized, output.attention_mask)
    penalty, keep_ratio = keep_ratio_loss(output.selector_log_probs, target_keep_ratio)
    entropy = selector_entropy(output.selector_log_probs)
    zero = reconstruction.new_zeros(())
    supervision = zero
    if keep_targets is not None:
        supervision = selector_supervision_loss(output.selector_log_probs, keep_targets, keep_target_positive_weight)
    classification, accuracy = zero, zero
    if code_logits is not None and code_labels is not None:
        classification, accuracy = code_classification_loss(code_logits, code_labels, output.attention_mask)
    loss = (
        reconstruction_weight * reconstruction
        + codebook_weight * codebook
        + commitment_weight * commitment
        + keep_ratio_weight * penalty
        + selector_entropy_weight * entropy
        + selector_supervision_weight * supervision
        + code_classification_weight * classification
    )
    hard = output.keep_mask.float().mean() if output.keep_mask is not None else keep_ratio
    return TokenizerLossOutput(
        loss=loss,
        reconstruction=reconstruction,
        codebook=codebook,
        commitment=commitment,
        keep_ratio_penalty=penalty,
        selector_entropy=entropy,
        keep_ratio=keep_ratio,
        hard_keep_ratio=hard.detach(),
        selector_supervision=supervision,
        code_classification=classification,
        code_accuracy=accuracy,
    )


__all__ = [
    "TokenizerLossOutput",
    "check_target_keep_ratio",
    "straight_through_codes",
    "feature_reconstruction_loss",
    "codebook_losses",
    "keep_ratio_loss",
    "selector_entropy",
    "selector_supervision_loss",
    "code_classification_loss",
    "tokenizer_loss",
]
