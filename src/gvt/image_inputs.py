"""How images enter LaVIT's language model: one small adapter per `GVTConfig.image_input_mode`, chosen once when the
model is built, so that the model's forward never branches on the mode.

Each adapter answers three questions with one interface:

- `slot_ids`: what an image's positions hold in the *expanded* sequence: its visual ids (`"ids"`, `"codebook"`: the
  ids alone carry the image, no pixels are needed again) or the image placeholder once per token (`"features"`: the
  continuous features must be put there from the pixels, as LLaVA does).
- `embed_images`: the language-model inputs of each image's tokens `[N, L, hidden]`.
- `embed_ids`: the language-model inputs of ids of the shared vocabulary `[B, T, hidden]` (text and visual ids).

Adapters hold no weights (they take the model's modules at call time, so wrappers such as peft's
`modules_to_save` copies are honoured). Relative imports only: this file travels into Hub repos with the model.
"""

from __future__ import annotations

from typing import ClassVar

import torch


class LaVITImageInputs:
    """The interface of the adapters (see the module docstring)."""

    mode: ClassVar[str]
    ids_carry_images: ClassVar[bool]
    """Whether the expanded positions hold the visual ids themselves (then an expanded sequence needs no pixels)."""
    supports_ett: ClassVar[bool] = False
    """Whether ETT's joint objective applies: the language model reads the tokenizer's codebook embeddings."""

    def slot_ids(self, model, token_ids: torch.Tensor | None, image_attention_mask: torch.Tensor) -> torch.Tensor:
        """Ids of the expanded positions of each image `[N, L]` (right-padded like `image_attention_mask`)."""
        raise NotImplementedError

    def embed_images(self, model, vision_outputs) -> torch.Tensor:
        """Language-model inputs of each image's tokens `[N, L, hidden]` from the tokenizer's output."""
        raise NotImplementedError

    def embed_ids(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        """Language-model inputs of ids of the shared vocabulary `[B, T]` -> `[B, T, hidden]`."""
        return model.get_input_embeddings()(input_ids)


class VisualIdsImageInputs(LaVITImageInputs):
    """`"ids"`: an image is its visual ids, read through the language model's embedding table (LaVIT)."""

    mode = "ids"
    ids_carry_images = True

    def slot_ids(self, model, token_ids, image_attention_mask):
        return model.vocabulary.codes_to_ids(token_ids * image_attention_mask)

    def embed_images(self, model, vision_outputs):
        ids = self.slot_ids(model, vision_outputs.token_ids, vision_outputs.attention_mask)
        return self.embed_ids(model, ids)


class FeaturesImageInputs(LaVITImageInputs):
    """`"features"`: an image is the tokenizer's continuous features through its projection (LaVIT understanding;
    GVT's fixed number of resampled latents)."""

    mode = "features"
    ids_carry_images = False

    def slot_ids(self, model, token_ids, image_attention_mask):
        return torch.full_like(image_attention_mask, model.config.image_token_id, dtype=torch.long)

    def embed_images(self, model, vision_outputs):
        return vision_outputs.features


class CodebookImageInputs(LaVITImageInputs):
    """`"codebook"`: an image is its codebook embeddings through the MLP projector (ETT). Visual ids anywhere in the
    sequence are embedded the same way (codebook row -> projector), so ids and pixels give the same inputs."""

    mode = "codebook"
    ids_carry_images = True
    supports_ett = True

    def slot_ids(self, model, token_ids, image_attention_mask):
        return model.vocabulary.codes_to_ids(token_ids * image_attention_mask)

    def embed_images(self, model, vision_outputs):
        quantized, inputs = vision_outputs.quantized, vision_outputs.quantizer_inputs
        if torch.is_grad_enabled() and inputs is not None and inputs.requires_grad:
            # ETT tunes the tokenizer on the caption loss: the value stays the codebook row, the gradient reaches both
            # the row and (straight through the quantizer) the merger, selector and encoder that produced its input.
            quantized = quantized + (inputs - inputs.detach())
        return model.codebook_projector(quantized)

    def embed_ids(self, model, input_ids):
        vocabulary = model.vocabulary
        visual = vocabulary.is_visual(input_ids)
        embeddings = model.get_input_embeddings()(input_ids.masked_fill(visual, 0))
        # Also without any visual id (a batch of blank images): the projector stays in the graph, so a step that
        # trains it alone has a loss to differentiate (and DDP sees its parameters used), and there is no host sync.
        codes = vocabulary.ids_to_codes(input_ids[visual])
        projected = model.codebook_projector(model.vision_tokenizer.embed_tokens(codes))
        return embeddings.masked_scatter(visual[..., None], projected.to(embeddings.dtype))


IMAGE_INPUTS: dict[str, type[LaVITImageInputs]] = {
    adapter.mode: adapter for adapter in (VisualIdsImageInputs, FeaturesImageInputs, CodebookImageInputs)
}


def image_inputs_for(mode: str) -> LaVITImageInputs:
    """The adapter of one `image_input_mode`."""
    if mode not in IMAGE_INPUTS:
        raise ValueError(f"image_input_mode must be one of {sorted(IMAGE_INPUTS)}, got {mode!r}.")
    return IMAGE_INPUTS[mode]()


__all__ = [
    "LaVITImageInputs",
    "VisualIdsImageInputs",
    "FeaturesImageInputs",
    "CodebookImageInputs",
    "IMAGE_INPUTS",
    "image_inputs_for",
]
