"""ETT's joint objective as [`LaVITForCausalLM`] computes it: `L = L_caption + alpha * L_reconstruction`.

`L_reconstruction` is the tokenizer's own objective ([`tokenizer_loss`]) of the very tokenizer pass whose codes the
language model read: cosine reconstruction of the (detached) encoder patch features from the straight-through codes,
the codebook / commitment terms and the keep-ratio penalty. Alpha is counted once, here.

Relative imports only: this file travels with the model code into a Hub repo, so a `trust_remote_code=True` repo
can run ETT without the `gvt` package.
"""

from __future__ import annotations

import torch
from torch import nn

from .tokenizer_objective import straight_through_codes, tokenizer_loss


def ett_reconstruction_loss(decoder: nn.Module, vision_outputs, target_keep_ratio: float) -> torch.Tensor:
    """The tokenizer objective of one tokenizer pass (`vision_outputs`, a [`GVTVisionTokenizerOutput`]), with
    `decoder` the feature decoder that maps the codes back to one encoder feature per patch."""
    codes = straight_through_codes(vision_outputs.quantizer_inputs, vision_outputs.quantized)
    decoded = decoder(codes, vision_outputs.attention_mask).decoded_features
    target = vision_outputs.encoder_hidden_states[:, 1:].detach()
    return tokenizer_loss(vision_outputs, decoded, target, target_keep_ratio).loss


def ett_reconstruction_scale(
    alpha: float,
    num_supervised: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor | float:
    """The weight of the reconstruction term in this batch's loss.

    Without `num_items_in_batch` it is `alpha`. Under `Trainer` (which normalises the caption loss by the label count
    `num_items_in_batch` of the whole optimizer step and then sums the micro-batches), it is alpha times this batch's
    share of those labels, `alpha * num_supervised / num_items_in_batch`, so the term is counted once per step. A
    step without any supervised label has no share to give: the term then keeps `alpha` (never 0 / 0).
    """
    if num_items_in_batch is None or num_supervised is None:
        return alpha
    total = torch.as_tensor(num_items_in_batch, device=num_supervised.device).to(torch.float32)
    share = num_supervised.to(torch.float32) / total.clamp_min(1.0)
    return torch.where(total > 0, alpha * share, torch.full_like(share, alpha))


def ett_joint_loss(
    caption_loss: torch.Tensor,
    reconstruction_loss: torch.Tensor,
    alpha: float,
    num_supervised: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """`caption_loss + scale * reconstruction_loss`, the scale from [`ett_reconstruction_scale`]."""
    scale = ett_reconstruction_scale(alpha, num_supervised, num_items_in_batch)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(caption_loss.dtype)
    return caption_loss + scale * reconstruction_loss.to(caption_loss.dtype)


__all__ = ["ett_reconstruction_loss", "ett_reconstruction_scale", "ett_joint_loss"]
