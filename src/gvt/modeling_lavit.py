"""LaVITForCausalLM: one causal language model that reads and writes visual tokens.

The language model is built from `config.text_config` (any `AutoModelForCausalLM`); the visual tokenizer is a
[`GVTVisionTokenizer`]. Text ids, `[IMG]`, `[/IMG]` and one id per codebook entry share one vocabulary
([`GVTVocabulary`]). How an image enters the language model (`config.image_input_mode`) is resolved once, at
construction, into a small adapter of `image_inputs.py`: visual ids through the embedding table (`"ids"`), the
tokenizer's continuous features through its projection (`"features"`), or codebook embeddings through an MLP
projector (`"codebook"`, ETT).

One sequence the caller can see: an image occupies as many positions as it has visual tokens, and every output
(logits, hidden states, attentions, cache, generated sequences) covers that *expanded* sequence. `input_ids` may come
*collapsed* (one `<image>` placeholder per image, as [`GVTProcessor`] writes them: `forward` and `generate` expand
them first, [`~LaVITForCausalLM.expand_image_tokens`] does it alone) or already *expanded*: in `"ids"` and
`"codebook"` modes the expanded positions hold the visual ids themselves (no pixels needed again), in `"features"`
mode the placeholder once per token (with `pixel_values`). So `generate` returns the expanded prompt followed by the
new tokens, and generation continues from its own output; assisted and prompt-lookup decoding, left padding, caller
`position_ids` and `inputs_embeds` work as for any decoder-only model.

Only relative imports: this file and its imports are copied into saved repos for `trust_remote_code=True`.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin, LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_gvt import GVTConfig
from .image_inputs import image_inputs_for
from .loss_ett import ett_joint_loss, ett_reconstruction_loss
from .modeling_gvt import GVTVisionTokenizer
from .vocabulary import GVTVocabulary, image_placeholder_layout, splice_image_tokens
from .weight_files import weight_read_errors

logger = logging.get_logger(__name__)

AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText")
CACHE_ARGUMENT = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The name of the KV cache in forwards and outputs: `cache` from transformers 5.24, `past_key_values` before."""


@dataclass
class LaVITImageOutputs(BaseModelOutputWithPooling):
    """Output of [`LaVITForCausalLM.get_image_features`]: the images as the language model reads them.

    Args:
        last_hidden_state (`[N, L, vision hidden_size]`): the tokenizer's hidden states of each image's tokens
            (LaVIT: merged kept tokens, right-padded; GVT: resampler latents).
        pooler_output (tuple of N `[L_i, text hidden_size]`): each image's language-model inputs, real tokens only:
            what fills the image's positions of the expanded sequence.
        hidden_states, attentions: the tokenizer's, when requested.
        image_token_ids (`[N, L]`): codebook ids of each image, right-padded (discrete tokenizers).
        image_attention_mask (`[N, L]`): 1 on real tokens.
        vision_outputs ([`GVTVisionTokenizerOutput`]): the whole tokenizer pass (ETT's reconstruction term reads it).
    """

    image_token_ids: torch.LongTensor | None = None
    image_attention_mask: torch.LongTensor | None = None
    vision_outputs: ModelOutput | None = None


@dataclass
class LaVITCausalLMOutputWithPast(ModelOutput):
    """Output of [`LaVITForCausalLM.forward`].

    Args:
        loss (`torch.FloatTensor`, *optional*): next-token loss on the labelled positions (0, not NaN, when no
            position is labelled).
        logits (`[B, L', vocab_size]`): over the expanded sequence (equal to the input length unless collapsed
            placeholders were expanded).
        cache (`past_key_values` before transformers 5.24), hidden_states, attentions: as returned by the language
            model, over the same expanded sequence.
        image_outputs ([`LaVITImageOutputs`], *optional*): the images of this forward, when any were given.
        expanded_input_ids, expanded_attention_mask, expanded_labels, expanded_position_ids (`[B, L']`): the sequence
            the language model read, when images were merged into `input_ids`.
        image_token_ids, image_attention_mask (`[N, L]`): codebook ids of each image, right-padded (discrete
            tokenizers, when `pixel_values` were given).
        caption_loss (`torch.FloatTensor`, *optional*): the next-token part of `loss` (ETT joint training only).
        reconstruction_loss (`torch.FloatTensor`, *optional*): the tokenizer objective of the same tokenizer pass
            (ETT joint training only, see [`GVTConfig.ett_reconstruction_weight`]); `loss = caption_loss + alpha *
            reconstruction_loss` (the second term scaled like the first when the Trainer passes
            `num_items_in_batch`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    if CACHE_ARGUMENT == "cache":
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_outputs: LaVITImageOutputs | None = None
    expanded_input_ids: torch.LongTensor | None = None
    expanded_attention_mask: torch.LongTensor | None = None
    expanded_labels: torch.LongTensor | None = None
    expanded_position_ids: torch.LongTensor | None = None
    image_token_ids: torch.LongTensor | None = None
    image_attention_mask: torch.LongTensor | None = None
    caption_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None


@dataclass
class LaVITImageGenerationOutput(ModelOutput):
    """Output of [`LaVITForCausalLM.generate_images`].

    Args:
        image_token_ids (`[B, L]`): generated codebook ids per sample, right-padded with 0 (feed them to the
            tokenizer's `decode` or the decoder pipeline).
        attention_mask (`[B, L]`): 1 on real tokens.
        sequences (`[B, T]`): the raw generated LLM ids (after the prompt), `[/IMG]` and padding included.
    """

    image_token_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    sequences: torch.LongTensor | None = None


@dataclass
class LaVITExpandedInputs(ModelOutput):
    """The expanded sequence of [`LaVITForCausalLM.expand_image_tokens`], ready for `forward` and `generate`.

    Args:
        input_ids, attention_mask (`[B, L']`): each image at its own number of positions.
        position_ids, labels (`[B, L']`, *optional*): expanded with the sequence, when given.
        pixel_values (*optional*): the images again, only in `"features"` mode, where the expanded positions hold
            placeholders that the features fill.
    """

    input_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    position_ids: torch.LongTensor | None = None
    labels: torch.LongTensor | None = None
    pixel_values: torch.FloatTensor | None = None


@dataclass
class LaVITMultimodalInputs:
    """What the language model reads (see [`LaVITForCausalLM.merge_image_inputs`])."""

    inputs_embeds: torch.FloatTensor | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.LongTensor | None = None
    labels: torch.LongTensor | None = None
    input_ids: torch.LongTensor | None = None
    images_merged: bool = False


def image_token_counts(image_outputs: LaVITImageOutputs) -> torch.LongTensor:
    """The number of visual tokens of each image `[N]` (its `pooler_output` entry's length: the one field that
    `generate` repeats per beam)."""
    mask = image_outputs.image_attention_mask
    pooled = image_outputs.pooler_output
    if mask is not None and mask.shape[0] == len(pooled):
        return mask.sum(dim=1)
    return torch.tensor([tokens.shape[0] for tokens in pooled], dtype=torch.long)


class AllowedTokensLogitsProcessor(LogitsProcessor):
    """Set every score outside the allowed ids to -inf. `suppress=True` inverts the choice: the given ids are banned.

    The id set is a contiguous range `[start, end)` plus a few extra ids, kept as a boolean vocabulary mask.
    """

    def __init__(self, vocab_size: int, start: int, end: int, extra_ids: tuple[int, ...] = (), suppress: bool = False):
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[start:end] = True
        for token_id in extra_ids:
            if 0 <= token_id < vocab_size:
                mask[token_id] = True
        self.mask = mask if suppress else ~mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.mask.to(scores.device)
        if mask.shape[0] < scores.shape[-1]:  # an LM head padded past the vocabulary: ban the padding rows too
            mask = torch.cat((mask, mask.new_ones(scores.shape[-1] - mask.shape[0])))
        return scores.masked_fill(mask[: scores.shape[-1]], -float("inf"))


def accepts_old_cache_name(forward):
    """From transformers 5.24 the KV cache is `cache` and `past_key_values` a deprecated alias (as in its models)."""
    if CACHE_ARGUMENT == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)
    return forward


class LaVITPreTrainedModel(PreTrainedModel):
    config_class = GVTConfig
    # The language model is the base model: a plain causal-LM checkpoint (keys `model.*`, `lm_head.*`) loads into
    # `language_model.*`; saved LaVIT repos keep their keys (`language_model.*`, `vision_tokenizer.*`, ...).
    base_model_prefix = "language_model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["GVTEncoderLayer", "GVTSelfCrossLayer", "GVTPerceiverLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = CACHE_ARGUMENT
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # the number of image tokens depends on the image

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[`PreTrainedModel.from_pretrained`]; an unreadable weight file raises a `ValueError` naming it."""
        with weight_read_errors(pretrained_model_name_or_path, kwargs.get("subfolder", "")):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class LaVITForCausalLM(LaVITPreTrainedModel, GenerationMixin):
    """A causal language model over text ids + `[IMG]` / `[/IMG]` + visual ids, with its visual tokenizer.

    Captions and answers with `generate(input_ids, attention_mask, pixel_values)`; generates images with
    `generate_images(...)` (visual token ids, to be decoded by the tokenizer's feature decoder and a diffusion UNet).
    """

    _tied_weights_keys: dict[str, str] = {}

    def __init__(self, config: GVTConfig):
        super().__init__(config)
        self.vocabulary = GVTVocabulary.from_config(config)
        self.image_inputs = image_inputs_for(config.image_input_mode)
        self.vision_tokenizer = GVTVisionTokenizer(config.vision_config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        if config.image_input_mode == "codebook":
            hidden = config.text_config.hidden_size
            self.codebook_projector = nn.Sequential(
                nn.Linear(config.vision_config.codebook_dim, hidden),
                ACT2FN[config.projector_hidden_act],
                nn.Linear(hidden, hidden),
            )
        else:
            self.codebook_projector = None
        self.post_init()

    # -- embeddings --------------------------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, **kw):
        """Resize the language model's vocabulary (text + `[IMG]`/`[/IMG]` + visual ids) and keep the config in step."""
        embeddings = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, **kw)
        self.config.text_config.vocab_size = embeddings.num_embeddings
        return embeddings

    @property
    def vocab_size(self) -> int:
        return self.config.text_config.vocab_size

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed ids of the shared vocabulary: text and visual ids through the embedding table, except in
        `"codebook"` mode, where visual ids go through the codebook and the MLP projector."""
        return self.image_inputs.embed_ids(self, input_ids)

    # -- images -> language-model inputs -------------------------------------------------------------------------------

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        selection: Literal["deterministic", "sample"] = "deterministic",
        generator: torch.Generator | None = None,
        max_tokens: int | None = None,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> LaVITImageOutputs:
        """Run the visual tokenizer on `pixel_values` `[N, C, H, W]` and return each image's language-model inputs
        (`pooler_output`, one `[L_i, hidden]` per image) with its codes and the tokenizer's output."""
        if isinstance(pixel_values, torch.Tensor) and pixel_values.is_floating_point():
            pixel_values = pixel_values.to(dtype=self.vision_tokenizer.dtype)
        requested = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        requested = {name: value for name, value in requested.items() if value is not None}
        vision_outputs = self.vision_tokenizer(
            pixel_values, selection=selection, generator=generator, max_tokens=max_tokens, keep_mask=keep_mask,
            **requested, **kwargs,
        )  # fmt: skip
        mask = vision_outputs.attention_mask
        embeddings = self.image_inputs.embed_images(self, vision_outputs)
        pooled = torch.split(embeddings[mask.bool()], mask.sum(dim=1).tolist())
        hidden = vision_outputs.token_hidden_states
        if hidden is None:
            hidden = vision_outputs.resampler_hidden_states
        return LaVITImageOutputs(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=getattr(vision_outputs, "hidden_states", None),
            attentions=getattr(vision_outputs, "attentions", None),
            image_token_ids=vision_outputs.token_ids,
            image_attention_mask=mask,
            vision_outputs=vision_outputs,
        )

    # -- input checks --------------------------------------------------------------------------------------------------

    def check_input_ids(self, input_ids: torch.Tensor) -> None:
        """Raise a `ValueError` for ids outside the vocabulary."""
        vocab_size = self.get_input_embeddings().num_embeddings
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {vocab_size}) (the vocabulary of text, [IMG]/[/IMG] and visual ids); got "
                f"values in [{int(input_ids.min())}, {int(input_ids.max())}]."
            )

    @staticmethod
    def check_attention_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int], has_cache: bool) -> None:
        """Raise a `ValueError` unless `attention_mask` is `[batch, length]` for inputs of `shape` (with a cache:
        `[batch, past + length]`), or a 4-D mask of the same batch."""
        if attention_mask is None:
            return
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}.")
        batch_size, length = shape
        if attention_mask.ndim == 4 and attention_mask.shape[0] == batch_size:
            return
        fits = attention_mask.ndim == 2 and attention_mask.shape[0] == batch_size
        fits = fits and (attention_mask.shape[1] >= length if has_cache else attention_mask.shape[1] == length)
        if not fits:
            expected = "[batch, past + new length]" if has_cache else f"[{batch_size}, {length}]"
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, but the inputs are {tuple(shape)}: it must "
                f"be {expected}, one entry per position (1 = attend, 0 = padding)."
            )

    def _pad_token_id(self) -> int:
        pad = self.config.text_config.pad_token_id
        if pad is None:
            pad = self.generation_config.pad_token_id if self.generation_config is not None else None
        if isinstance(pad, (list, tuple)):
            pad = pad[0]
        return 0 if pad is None else int(pad)

    # -- the expanded sequence -------------------------------------------------------------------------------------

    def _expand_image_ids(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        labels: torch.LongTensor | None,
        image_outputs: LaVITImageOutputs,
    ) -> tuple[torch.LongTensor, torch.Tensor | None, torch.LongTensor | None, torch.LongTensor | None, torch.Tensor]:
        """Put each image at its own number of positions: collapsed placeholders are spliced (one vectorised
        splice), and in the modes whose ids carry the image, the image positions become the visual ids.

        Also returns the boolean mask of the image positions `[B, L']` (row-major order is image order)."""
        image_token_id = self.config.image_token_id
        placeholders = input_ids == image_token_id
        counts = image_token_counts(image_outputs).to(input_ids.device)
        collapsed = image_placeholder_layout(placeholders, counts)
        codes, code_mask = image_outputs.image_token_ids, image_outputs.image_attention_mask
        carry = self.image_inputs.ids_carry_images
        if carry and (codes is None or codes.shape[0] != counts.shape[0]):
            raise ValueError("The image outputs hold no codebook ids for these images; pass pixel_values instead.")
        if code_mask is None or code_mask.shape[0] != counts.shape[0]:  # pre-encoded outputs keep only pooler_output
            longest = int(counts.max()) if counts.numel() else 0
            code_mask = (torch.arange(longest, device=counts.device) < counts[:, None]).long()
        if bool(collapsed.any()):
            if attention_mask is not None and attention_mask.ndim != 2:
                raise ValueError("A 4-D attention_mask cannot be expanded with the images: pass a 2-D mask.")
            # Image k owns the k-th placeholder run: 1 placeholder when collapsed, counts[k] when expanded. Collapsed
            # ones are spliced into one placeholder per token, so that every image position holds the placeholder.
            collapsed_positions = placeholders.clone()
            collapsed_positions[placeholders] = collapsed.repeat_interleave(torch.where(collapsed, 1, counts))
            spliced = splice_image_tokens(
                input_ids,
                attention_mask,
                collapsed_positions,
                torch.full_like(code_mask[collapsed], image_token_id, dtype=input_ids.dtype),
                code_mask[collapsed],
                pad_token_id=self._pad_token_id(),
                labels=labels,
                position_ids=position_ids,
            )
            input_ids, labels, position_ids = spliced.input_ids, spliced.labels, spliced.position_ids
            attention_mask = spliced.attention_mask
        image_positions = input_ids == image_token_id
        if carry:
            values = self.image_inputs.slot_ids(self, codes, code_mask)[code_mask.bool()]
            input_ids = input_ids.masked_scatter(image_positions, values.to(input_ids.dtype))
            if labels is not None:
                labels = torch.where(image_positions & (labels == image_token_id), input_ids, labels)
        return input_ids, attention_mask, position_ids, labels, image_positions

    @staticmethod
    def _warn_placeholders_without_images() -> None:
        # As LLaVA: a placeholder with no image is read as the ordinary token it is (a model may also generate one).
        logger.warning_once(
            "input_ids hold image placeholders but no pixel_values were given: they are embedded as ordinary tokens. "
            "Pass the images the processor returned, or pre-tokenize them with "
            "`processor(..., vision_tokenizer=model.vision_tokenizer)`."
        )

    def expand_image_tokens(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **tokenizer_kwargs,
    ) -> LaVITExpandedInputs:
        """Expand each image into its own number of positions, as `generate` does before the language model runs.

        In `"ids"` and `"codebook"` modes the result holds the visual ids (pass it on without pixels); in
        `"features"` mode the placeholder once per visual token, and `pixel_values` come back with it. `labels` and
        `position_ids` follow the expansion (image positions: the visual ids as labels; the placeholder's position
        counted on). Inputs that are already expanded come back unchanged (visual ids filled in where the mode's ids
        carry the image). `tokenizer_kwargs` (`selection`, `generator`, `max_tokens`) go to the visual tokenizer.
        """
        if input_ids is None:
            raise ValueError("expand_image_tokens needs input_ids.")
        self.check_input_ids(input_ids)
        self.check_attention_mask(attention_mask, tuple(input_ids.shape), has_cache=False)
        if position_ids is not None and tuple(position_ids.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"position_ids have shape {tuple(position_ids.shape)}, input_ids {tuple(input_ids.shape)}."
            )
        if pixel_values is None:
            if bool((input_ids == self.config.image_token_id).any()):
                self._warn_placeholders_without_images()
            return LaVITExpandedInputs(input_ids, attention_mask, position_ids, labels)
        with torch.no_grad():
            image_outputs = self.get_image_features(pixel_values, return_dict=True, **tokenizer_kwargs)
        input_ids, attention_mask, position_ids, labels, _ = self._expand_image_ids(
            input_ids, attention_mask, position_ids, labels, image_outputs
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pixels = None if self.image_inputs.ids_carry_images else pixel_values
        return LaVITExpandedInputs(input_ids, attention_mask, position_ids, labels, pixels)

    def _placeholder_mask_from_embeds(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        token = torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
        placeholder = self.get_input_embeddings()(token).to(inputs_embeds.dtype)
        return (inputs_embeds == placeholder).all(dim=-1)

    def merge_image_inputs(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        image_outputs: LaVITImageOutputs | None = None,
        loss_on_visual_tokens: bool | None = None,
        has_cache: bool = False,
    ) -> LaVITMultimodalInputs:
        """Embed the sequence and put each image's inputs at its positions (collapsed placeholders expanded first;
        the image positions of `inputs_embeds` replaced by one `masked_scatter`, as LLaVA does).

        With a filled cache, images whose placeholders are not in this step's ids were read at prefill: they are not
        merged again. Labels follow the expansion; placeholder positions are never supervised, visual ids only with
        `loss_on_visual_tokens` (default `config.loss_on_visual_tokens`).
        """
        config = self.config
        merged = False
        if input_ids is not None:
            self.check_input_ids(input_ids)
            has_placeholders = bool((input_ids == config.image_token_id).any())
            if image_outputs is not None and (has_placeholders or not has_cache):
                past_mask = None
                if has_cache and attention_mask is not None and attention_mask.ndim == 2:  # past + new positions
                    split = attention_mask.shape[1] - input_ids.shape[1]
                    past_mask, attention_mask = attention_mask[:, :split], attention_mask[:, split:]
                input_ids, attention_mask, position_ids, labels, image_positions = self._expand_image_ids(
                    input_ids, attention_mask, position_ids, labels, image_outputs
                )
                if past_mask is not None:
                    attention_mask = torch.cat((past_mask, attention_mask.to(past_mask.dtype)), dim=1)
                merged = True
            elif has_placeholders and not has_cache:
                self._warn_placeholders_without_images()
            inputs_embeds = self.image_inputs.embed_ids(self, input_ids)
            # The images' own inputs go to their positions (in "ids"/"codebook" modes these equal the embedded visual
            # ids in value, and carry the gradient back into the tokenizer for ETT).
            placeholders = image_positions if merged else None
        else:
            placeholders = None
            if image_outputs is not None:
                placeholders = self._placeholder_mask_from_embeds(inputs_embeds)
                if has_cache and not bool(placeholders.any()):
                    placeholders = None
                else:
                    counts = image_token_counts(image_outputs).to(placeholders.device)
                    collapsed = image_placeholder_layout(placeholders, counts)
                    if bool((collapsed & (counts != 1)).any()):
                        raise ValueError(
                            "inputs_embeds cannot be expanded: give each image as many placeholder embeddings as it "
                            "has visual tokens (see expand_image_tokens), or pass input_ids."
                        )
                    merged = True
        if placeholders is not None and bool(placeholders.any()):
            features = torch.cat(tuple(image_outputs.pooler_output), dim=0)
            inputs_embeds = inputs_embeds.masked_scatter(placeholders[..., None], features.to(inputs_embeds))
        if labels is not None:
            visual_loss = config.loss_on_visual_tokens if loss_on_visual_tokens is None else loss_on_visual_tokens
            ignored = labels == config.image_token_id
            if not visual_loss:
                ignored = ignored | self.vocabulary.is_visual(labels)
            labels = labels.masked_fill(ignored, -100)
        return LaVITMultimodalInputs(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            input_ids=input_ids,
            images_merged=merged,
        )

    # -- forward -------------------------------------------------------------------------------------------------------

    @can_return_tuple
    @accepts_old_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_on_visual_tokens: bool | None = None,
        mm_encoder_outputs: dict[str, LaVITImageOutputs] | None = None,
        **kwargs,
    ) -> LaVITCausalLMOutputWithPast:
        r"""
        input_ids (`[B, T]`): text with images, collapsed (`[IMG] <image> [/IMG]` per image, from [`GVTProcessor`])
            or expanded (see [`expand_image_tokens`]); or pre-tokenized visual ids between `[IMG]` and `[/IMG]`.
        pixel_values (`[N, C, H, W]`): one image per placeholder run, in reading order (row by row).
        inputs_embeds (`[B, T, hidden]`): instead of `input_ids`; with images, their positions hold the
            placeholder's embedding once per visual token and are replaced by the image inputs.
        labels (`[B, T]`): next-token targets aligned with `input_ids` (-100 to ignore); they are expanded with the
            sequence; placeholders are never supervised and visual ids only with `loss_on_visual_tokens` (default
            `config.loss_on_visual_tokens`).
        mm_encoder_outputs (`{"image": LaVITImageOutputs}`): pre-computed images (what `generate` passes).

        Collapsed input is expanded first: the outputs cover the expanded sequence, returned as `expanded_*`.
        Expanded input is not re-expanded: every output has the input's length. Position ids default to the running
        count of attended tokens (left padding gives the same positions as no padding).

        ETT: in `"codebook"` mode, in training mode with trainable tokenizer parameters (stage 2 of
        `gvt.ETTCallback`) and `config.ett_reconstruction_weight` (alpha) > 0, the tokenizer samples its keep
        decision (straight-through, as in its own training; deterministic while the selector itself is frozen) and
        `loss = caption_loss + alpha * reconstruction_loss`, the tokenizer objective of the same pass
        (`gvt.tokenizer_objective.tokenizer_loss`).
        """
        if cache is None:  # transformers < 5.24 passes the KV cache as `past_key_values`
            cache = kwargs.pop("past_key_values", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if pixel_values is not None and mm_encoder_outputs:
            raise ValueError("Pass either pixel_values or mm_encoder_outputs, not both.")
        sequence = input_ids if input_ids is not None else inputs_embeds
        has_cache = cache is not None and cache.get_seq_length() > 0
        self.check_attention_mask(attention_mask, tuple(sequence.shape[:2]), has_cache)

        ett = pixel_values is not None and self._ett_reconstruction_active()
        image_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(
                pixel_values,
                selection="sample" if ett and self._selector_trainable() else "deterministic",
                output_hidden_states=kwargs.get("output_hidden_states"),
                output_attentions=kwargs.get("output_attentions"),
                return_dict=True,
            )
        elif mm_encoder_outputs:
            image_outputs = mm_encoder_outputs.get("image")
        num_supervised = labels[..., 1:].ne(-100).sum() if labels is not None else None

        merged = self.merge_image_inputs(
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            labels,
            image_outputs,
            loss_on_visual_tokens=loss_on_visual_tokens,
            has_cache=has_cache,
        )
        inputs_embeds, attention_mask, labels = merged.inputs_embeds, merged.attention_mask, merged.labels
        position_ids = merged.position_ids
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
            position_ids = positions[:, -inputs_embeds.shape[1] :]

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            return_dict=True,
            **{CACHE_ARGUMENT: cache},
            **kwargs,
        )
        loss, caption_loss, reconstruction_loss = outputs.loss, None, None
        num_items = kwargs.get("num_items_in_batch")
        if loss is not None and not bool(labels[..., 1:].ne(-100).any()):
            if num_items is None or not bool(torch.as_tensor(num_items).gt(0).any()):
                loss = outputs.logits.sum() * 0.0  # nothing supervised: 0, not 0 / 0
        if ett and loss is not None:
            caption_loss = loss
            decoder = self.vision_tokenizer.decoders[self.ett_decoder_type()]
            reconstruction_loss = ett_reconstruction_loss(
                decoder, image_outputs.vision_outputs, self.config.ett_target_keep_ratio
            )
            loss = ett_joint_loss(
                caption_loss, reconstruction_loss, self.config.ett_reconstruction_weight, num_supervised, num_items
            )
        expanded = merged.images_merged and input_ids is not None
        return LaVITCausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            expanded_input_ids=merged.input_ids if expanded else None,
            expanded_attention_mask=attention_mask if expanded else None,
            expanded_labels=labels if expanded else None,
            expanded_position_ids=merged.position_ids if expanded else None,
            image_token_ids=image_outputs.image_token_ids if pixel_values is not None else None,
            image_attention_mask=image_outputs.image_attention_mask if pixel_values is not None else None,
            caption_loss=caption_loss,
            reconstruction_loss=reconstruction_loss,
        )

    # -- ETT: the tokenizer objective in the joint loss -----------------------------------------------------------

    def _ett_reconstruction_active(self) -> bool:
        """True while ETT's reconstruction term applies: `"codebook"` mode, alpha > 0, training with gradients, and
        some parameter of the token selector / merger / quantizer trainable."""
        config = self.config
        if not self.image_inputs.supports_ett or config.ett_reconstruction_weight <= 0:
            return False
        if not (self.training and torch.is_grad_enabled()):
            return False
        tokenizer = self.vision_tokenizer
        parts = (tokenizer.token_selector, tokenizer.token_merger, tokenizer.quantizer)
        return any(p.requires_grad for part in parts for p in part.parameters())

    def _selector_trainable(self) -> bool:
        return any(p.requires_grad for p in self.vision_tokenizer.token_selector.parameters())

    def ett_decoder_type(self) -> str:
        """The feature decoder ETT's reconstruction term uses (`"highres"` when present); it must map the codes back
        to one encoder feature per patch."""
        vision = self.config.vision_config
        off = "set config.ett_reconstruction_weight = 0 (`gvt train ett --alpha 0` on the command line)"
        if not vision.decoder_types:
            raise ValueError(
                f"ETT's reconstruction term needs a feature decoder; vision_config.decoder_types is empty. Add one, or "
                f"{off} to tune the tokenizer on the caption loss alone."
            )
        if vision.decoder_output_dim != vision.hidden_size or vision.decoder_num_queries != vision.num_patches:
            raise ValueError(
                "ETT's reconstruction term decodes the codes back to the encoder's patch features: it needs "
                f"vision_config.decoder_output_dim ({vision.decoder_output_dim}) == hidden_size ({vision.hidden_size}) "
                f"and decoder_num_queries ({vision.decoder_num_queries}) == num_patches ({vision.num_patches}); "
                f"or {off} to tune the tokenizer on the caption loss alone."
            )
        return "highres" if "highres" in vision.decoder_types else vision.decoder_types[0]

    def ett_reconstruction_loss(self, vision_outputs) -> torch.Tensor:
        """The tokenizer objective (`gvt.tokenizer_objective.tokenizer_loss`) of one tokenizer pass: cosine
        reconstruction of the (detached) encoder patch features from the straight-through codes, codebook /
        commitment terms and the keep-ratio penalty towards `config.ett_target_keep_ratio`."""
        decoder = self.vision_tokenizer.decoders[self.ett_decoder_type()]
        return ett_reconstruction_loss(decoder, vision_outputs, self.config.ett_target_keep_ratio)

    # -- generation ----------------------------------------------------------------------------------------------------

    def text_logits_processor(self) -> AllowedTokensLogitsProcessor:
        """Bans visual ids, the placeholder, `[IMG]` and `[/IMG]` while writing text."""
        vocab, config = self.vocabulary, self.config
        return AllowedTokensLogitsProcessor(
            self.get_output_embeddings().out_features,
            vocab.visual_token_offset,
            vocab.visual_token_end,
            extra_ids=(config.image_token_id, config.image_start_token_id, config.image_end_token_id),
            suppress=True,
        )

    def image_logits_processor(self) -> AllowedTokensLogitsProcessor:
        """Allows only visual ids and `[/IMG]` while writing an image."""
        vocab = self.vocabulary
        return AllowedTokensLogitsProcessor(
            self.get_output_embeddings().out_features,
            vocab.visual_token_offset,
            vocab.visual_token_end,
            extra_ids=(self.config.image_end_token_id,),
        )

    def _prepare_generation_inputs(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.FloatTensor | None,
        kwargs: dict,
    ) -> dict:
        """The inputs of the parent `generate`: images expanded into the ids (collapsed placeholders spliced; in
        `"features"` mode, or with `inputs_embeds`, the images pre-encoded once as `mm_encoder_outputs`). Pops
        `inputs_embeds`, `position_ids` and `mm_encoder_outputs` from `kwargs`."""
        inputs_embeds = kwargs.pop("inputs_embeds", None)
        position_ids = kwargs.pop("position_ids", None)
        encoded = kwargs.pop("mm_encoder_outputs", None) or None
        sequence = input_ids if input_ids is not None else inputs_embeds
        if sequence is not None:
            self.check_attention_mask(attention_mask, tuple(sequence.shape[:2]), has_cache=False)
            if position_ids is not None and tuple(position_ids.shape) != tuple(sequence.shape[:2]):
                raise ValueError(
                    f"position_ids have shape {tuple(position_ids.shape)}, the inputs {tuple(sequence.shape[:2])}."
                )
        if input_ids is not None:
            self.check_input_ids(input_ids)
        if inputs_embeds is not None and input_ids is not None and inputs_embeds.shape[:2] != input_ids.shape:
            raise ValueError(
                f"inputs_embeds {tuple(inputs_embeds.shape)} and input_ids {tuple(input_ids.shape)} must describe the "
                "same (expanded) sequence."
            )
        if pixel_values is not None:
            if encoded is not None:
                raise ValueError("Pass either pixel_values or mm_encoder_outputs, not both.")
            if sequence is None:
                raise ValueError(
                    "pixel_values need a prompt that holds image placeholders (input_ids or inputs_embeds)."
                )
            image_outputs = self.get_image_features(pixel_values, return_dict=True)
            if inputs_embeds is None:
                input_ids, attention_mask, position_ids, _, _ = self._expand_image_ids(
                    input_ids, attention_mask, position_ids, None, image_outputs
                )
            if inputs_embeds is not None or bool((input_ids == self.config.image_token_id).any()):
                # Only `pooler_output` travels (generate repeats it per beam); forward scatters it at prefill.
                lean = LaVITImageOutputs(pooler_output=image_outputs.pooler_output)
                encoded = {"image": lean}
        elif encoded is None and inputs_embeds is None and input_ids is not None:
            # Placeholders without images (beyond what a passed cache holds) are read as ordinary tokens.
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            cached = cache.get_seq_length() if isinstance(cache, Cache) else 0
            if bool((input_ids[:, cached:] == self.config.image_token_id).any()):
                self._warn_placeholders_without_images()
        prepared = {}
        for name, value in (
            ("input_ids", input_ids),
            ("inputs_embeds", inputs_embeds),
            ("attention_mask", attention_mask),
            ("position_ids", position_ids),
            ("mm_encoder_outputs", encoded),
        ):
            if value is not None:
                prepared[name] = value
        return prepared

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        """As the parent's; the pre-encoded images also reach the first forward of an empty cache (an assistant
        model's prefill, which `generate` does not count as a first iteration)."""
        encoded = kwargs.get("mm_encoder_outputs")
        named = {"next_sequence_length": next_sequence_length, "cache": cache, "inputs_embeds": inputs_embeds}
        kwargs.update({name: value for name, value in named.items() if value is not None})
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, attention_mask=attention_mask, is_first_iteration=is_first_iteration, **kwargs
        )
        if encoded and "mm_encoder_outputs" not in model_inputs:
            cache = model_inputs.get(CACHE_ARGUMENT)
            if cache is None or cache.get_seq_length() == 0:
                model_inputs["mm_encoder_outputs"] = encoded
        return model_inputs

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        logits_processor: LogitsProcessorList | None = None,
        generation_mode: Literal["text", "image"] = "text",
        **kwargs,
    ):
        """Write text (captions, answers) after the prompt; visual ids can never be produced.

        Images are expanded here, once, before the parent `generate` runs: the returned sequences hold the expanded
        prompt (see [`expand_image_tokens`]) followed by the new tokens, so `generate(output)` continues where the
        output ends. Everything of the parent works (greedy, sampling, beams, assisted and prompt-lookup decoding,
        left-padded batches, `position_ids`, `inputs_embeds`, no prompt at all). `generation_mode="image"` calls
        [`generate_images`].
        """
        if generation_mode == "image":
            return self.generate_images(
                input_ids, attention_mask, pixel_values, logits_processor=logits_processor, **kwargs
            )
        if generation_mode != "text":
            raise ValueError(f"generation_mode must be 'text' or 'image', got {generation_mode!r}.")
        inputs = self._prepare_generation_inputs(input_ids, attention_mask, pixel_values, kwargs)
        processors = LogitsProcessorList(logits_processor or [])
        processors.append(self.text_logits_processor())
        return super().generate(**inputs, logits_processor=processors, **kwargs)

    @staticmethod
    def _check_image_generation_arguments(guidance_scale, max_new_tokens, min_new_tokens, kwargs: dict) -> None:
        def number(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}.")

        def integer(name, value, minimum):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")

        if guidance_scale is not None:
            number("guidance_scale", guidance_scale)
            if guidance_scale < 0:
                raise ValueError(
                    f"guidance_scale must be >= 0 (1 or None: no guidance; LaVIT uses 3-4), got {guidance_scale}."
                )
        if max_new_tokens is not None:
            integer("max_new_tokens", max_new_tokens, 1)
        integer("min_new_tokens", min_new_tokens, 0)
        if max_new_tokens is not None and min_new_tokens > max_new_tokens:
            raise ValueError(f"min_new_tokens ({min_new_tokens}) exceeds max_new_tokens ({max_new_tokens}).")
        if kwargs.get("temperature") is not None:
            number("temperature", kwargs["temperature"])
            if kwargs["temperature"] <= 0:
                raise ValueError(f"temperature must be > 0, got {kwargs['temperature']}.")
        if kwargs.get("top_p") is not None:
            number("top_p", kwargs["top_p"])
            if not 0 < kwargs["top_p"] <= 1:
                raise ValueError(f"top_p must lie in (0, 1], got {kwargs['top_p']}.")
        if kwargs.get("top_k") is not None:
            integer("top_k", kwargs["top_k"], 0)

    @torch.no_grad()
    def generate_images(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        guidance_scale: float | None = None,
        negative_input_ids: torch.LongTensor | None = None,
        negative_attention_mask: torch.LongTensor | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 1,
        logits_processor: LogitsProcessorList | None = None,
        **kwargs,
    ) -> LaVITImageGenerationOutput:
        """Generate one image per prompt as visual token ids (text-to-image, or image+text-to-image when the prompt
        holds image placeholders and `pixel_values` are given; no prompt: one unconditional image).

        `[IMG]` is appended to prompts that do not end with it; after it only visual ids and `[/IMG]` can be
        produced, and generation stops at `[/IMG]` (or after `max_new_tokens`, default one per patch + 1).
        `guidance_scale` >= 0 (> 1 guides) applies classifier-free guidance on the logits against an unconditional
        prompt (`negative_input_ids`, default `<s> [IMG]`, or `[IMG]` without a BOS token); 1 or None means no
        guidance. Sampling settings (`do_sample`, `top_k`, `top_p`, `temperature`, ...) pass to `generate`.
        """
        config = self.config
        self._check_image_generation_arguments(guidance_scale, max_new_tokens, min_new_tokens, kwargs)
        start = config.image_start_token_id
        bos = config.text_config.bos_token_id
        prefix = [bos] if isinstance(bos, int) else []
        if input_ids is None:
            if kwargs.get("inputs_embeds") is not None:
                raise ValueError("generate_images needs input_ids (the prompt), not inputs_embeds.")
            input_ids = torch.tensor([prefix + [start]], device=self.device)
        self.check_attention_mask(attention_mask, tuple(input_ids.shape), has_cache=False)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not bool((input_ids[:, -1] == start).all()):
            if bool((input_ids[:, -1] == start).any()):
                raise ValueError("Either every prompt or none must end with the image-start token.")
            input_ids = torch.cat((input_ids, input_ids.new_full((input_ids.shape[0], 1), start)), dim=1)
            attention_mask = torch.cat((attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))), dim=1)
            if kwargs.get("position_ids") is not None:
                positions = kwargs["position_ids"]
                kwargs["position_ids"] = torch.cat((positions, positions[:, -1:] + 1), dim=1)
        if guidance_scale is not None and guidance_scale != 1 and negative_input_ids is None:
            negative_input_ids = torch.tensor([prefix + [start]] * input_ids.shape[0], device=input_ids.device)
        if negative_input_ids is not None:
            if negative_input_ids.ndim != 2 or negative_input_ids.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"negative_input_ids must be [batch={input_ids.shape[0]}, length], got "
                    f"{tuple(negative_input_ids.shape)}."
                )
            self.check_attention_mask(negative_attention_mask, tuple(negative_input_ids.shape), has_cache=False)
        if max_new_tokens is None:
            max_new_tokens = config.vision_config.num_patches + 1
        kwargs.setdefault("pad_token_id", self._pad_token_id())
        # Image generation samples one sequence per prompt: a captioning generation config (beams) must not leak in.
        kwargs.setdefault("num_beams", 1)
        inputs = self._prepare_generation_inputs(input_ids, attention_mask, pixel_values, kwargs)
        processors = LogitsProcessorList(logits_processor or [])
        processors.append(self.image_logits_processor())
        output = super().generate(
            **inputs,
            logits_processor=processors,
            guidance_scale=guidance_scale,
            negative_prompt_ids=negative_input_ids,
            negative_prompt_attention_mask=negative_attention_mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=config.image_end_token_id,
            return_dict_in_generate=False,
            **kwargs,
        )
        generated = output[:, inputs["input_ids"].shape[1] :]
        is_visual = self.vocabulary.is_visual(generated)
        mask = is_visual.long().cumprod(dim=1)  # visual ids up to the first [/IMG] (or padding)
        mask[:, config.vision_config.num_patches :] = 0  # never more codes than an image has patches
        length = int(mask.sum(dim=1).max()) if mask.numel() else 0
        codes = (self.vocabulary.ids_to_codes(generated) * mask)[:, :length]
        return LaVITImageGenerationOutput(image_token_ids=codes, attention_mask=mask[:, :length], sequences=generated)

    # -- saving --------------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save as usual; the repo also carries the code and `auto_map` entries for `trust_remote_code=True`."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoConfig"] = "configuration_gvt.GVTConfig"
        for auto_class in AUTO_CLASSES:
            auto_map[auto_class] = "modeling_lavit.LaVITForCausalLM"
        self.config.auto_map = auto_map
        pipeline_file = Path(__file__).with_name("pipeline_image_to_text.py")
        if pipeline_file.is_file():
            # `pipeline("image-to-text", model=repo, trust_remote_code=True)` captions an image without a prompt.
            self.config.custom_pipelines = {
                "image-to-text": {
                    "impl": "pipeline_image_to_text.GVTImageToTextPipeline",
                    "pt": ["AutoModelForImageTextToText"],
                    "tf": [],
                    "type": "multimodal",
                }
            }
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if pipeline_file.is_file() and kwargs.get("is_main_process", True):
            shutil.copy(pipeline_file, Path(save_directory) / pipeline_file.name)
        return result


LaVITForCausalLM.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "LaVITForCausalLM",
    "LaVITPreTrainedModel",
    "LaVITCausalLMOutputWithPast",
    "LaVITImageGenerationOutput",
    "LaVITImageOutputs",
    "LaVITExpandedInputs",
    "LaVITMultimodalInputs",
    "AllowedTokensLogitsProcessor",
]
