"""LaVITForCausalLM: one causal language model that reads and writes visual tokens.

The language model is built from `config.text_config` (any `AutoModelForCausalLM`); the visual tokenizer is a
[`GVTVisionTokenizer`]. Text ids, `[IMG]`, `[/IMG]` and one id per codebook entry share one vocabulary
([`GVTVocabulary`]). Images enter where the processor put an `<image>` placeholder, as their own dynamic number of
tokens, in one of three ways (`config.image_input_mode`): visual ids through the embedding table (`"ids"`), the
tokenizer's continuous features through its projection (`"features"`), or codebook embeddings through an MLP
projector (`"codebook"`, ETT).

Generation: placeholders are expanded once, in `generate`, before the parent `generate` runs (the expanded prompt
goes in as `input_ids`, plus `inputs_embeds` in `"features"` mode); the returned `sequences` start with the caller's
*unexpanded* `input_ids`, as pipelines expect. Visual ids are suppressed while writing text; `generate_images` allows
only visual ids and `[/IMG]`, with classifier-free guidance on the logits against an unconditional prompt.

Only relative imports: this file and its imports are copied into saved repos for `trust_remote_code=True`.
"""

from __future__ import annotations

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
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_gvt import GVTConfig
from .modeling_gvt import GVTVisionTokenizer
from .vocabulary import GVTVocabulary, splice_image_tokens
from .weight_files import weight_read_errors

logger = logging.get_logger(__name__)

AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText")
CACHE_ARGUMENT = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The name of the KV cache in forwards and outputs: `cache` from transformers 5.24, `past_key_values` before."""


@dataclass
class LaVITCausalLMOutputWithPast(ModelOutput):
    """Output of [`LaVITForCausalLM.forward`].

    Args:
        loss (`torch.FloatTensor`, *optional*): next-token loss on the labelled positions.
        logits (`[B, L', vocab_size]`): over the expanded sequence (each placeholder replaced by its image's tokens).
        cache (`past_key_values` before transformers 5.24), hidden_states, attentions: as returned by the language
            model.
        expanded_input_ids, expanded_attention_mask, expanded_labels (`[B, L']`): the expanded sequence (only when
            `pixel_values` were given).
        image_token_ids, image_attention_mask (`[N, L]`): codebook ids of each image, right-padded (discrete
            tokenizers, only when `pixel_values` were given).
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
    expanded_input_ids: torch.LongTensor | None = None
    expanded_attention_mask: torch.LongTensor | None = None
    expanded_labels: torch.LongTensor | None = None
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
class LaVITMultimodalInputs(ModelOutput):
    """The expanded inputs of the language model (see [`LaVITForCausalLM.prepare_multimodal_inputs`])."""

    input_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    labels: torch.LongTensor | None = None
    inputs_embeds: torch.FloatTensor | None = None
    image_token_ids: torch.LongTensor | None = None
    image_attention_mask: torch.LongTensor | None = None
    vision_outputs: ModelOutput | None = None


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


class LaVITPreTrainedModel(PreTrainedModel):
    config_class = GVTConfig
    base_model_prefix = "model"
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

    # -- images -> tokens ----------------------------------------------------------------------------------------------

    def get_image_tokens(self, pixel_values: torch.Tensor, **tokenizer_kwargs):
        """Run the visual tokenizer: `(codes [N, L] or None, mask [N, L], embeddings [N, L, hidden] or None)`.

        The embeddings are what `"features"` (projected merged features) and `"codebook"` (projected codebook rows,
        straight-through to the tokenizer in training) modes put in the sequence; `"ids"` mode uses only the codes.
        """
        codes, mask, embeddings, _ = self._image_tokens(pixel_values, **tokenizer_kwargs)
        return codes, mask, embeddings

    def _image_tokens(self, pixel_values: torch.Tensor, **tokenizer_kwargs):
        """[`get_image_tokens`] plus the tokenizer's full output (for ETT's reconstruction term)."""
        mode = self.config.image_input_mode
        output = self.vision_tokenizer(pixel_values, **tokenizer_kwargs)
        embeddings = None
        if mode == "features":
            embeddings = output.features
        elif mode == "codebook":
            quantized = output.quantized
            if self.training:
                quantized = output.quantizer_inputs + (quantized - output.quantizer_inputs).detach()
            embeddings = self.codebook_projector(quantized)
        return output.token_ids, output.attention_mask, embeddings, output

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed ids of the shared vocabulary: text and visual ids through the embedding table, except in
        `"codebook"` mode, where visual ids go through the codebook and the MLP projector."""
        embed = self.get_input_embeddings()
        if self.config.image_input_mode != "codebook":
            return embed(input_ids)
        visual = self.vocabulary.is_visual(input_ids)
        embeddings = embed(input_ids.masked_fill(visual, 0))
        if visual.any():
            codes = self.vocabulary.ids_to_codes(input_ids[visual])
            projected = self.codebook_projector(self.vision_tokenizer.embed_tokens(codes)).to(embeddings.dtype)
            embeddings = embeddings.masked_scatter(visual[..., None], projected)
        return embeddings

    def check_input_ids(self, input_ids: torch.Tensor, has_pixels: bool) -> None:
        vocab_size = self.get_input_embeddings().num_embeddings
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {vocab_size}) (the vocabulary of text, [IMG]/[/IMG] and visual ids); got "
                f"values in [{int(input_ids.min())}, {int(input_ids.max())}]."
            )
        if not has_pixels and bool((input_ids == self.config.image_token_id).any()):
            raise ValueError(
                "input_ids hold image placeholders but no pixel_values were given; pass the images the processor "
                "returned, or pre-tokenize them with `processor(..., vision_tokenizer=model.vision_tokenizer)`."
            )

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        loss_on_visual_tokens: bool | None = None,
        return_embeddings: bool = True,
        **tokenizer_kwargs,
    ) -> LaVITMultimodalInputs:
        """Expand each image placeholder into the image's own tokens (one vectorised splice) and embed the result.

        `labels` follow the expansion; visual positions get `-100` unless `loss_on_visual_tokens`.
        With `return_embeddings=False` only ids (and `inputs_embeds` only where ids cannot express the image,
        i.e. `"features"` mode) are returned.
        """
        if input_ids is None:
            raise ValueError("input_ids are required with pixel_values.")
        self.check_input_ids(input_ids, has_pixels=pixel_values is not None)
        config = self.config
        codes = code_mask = image_embeddings = vision_outputs = None
        spliced_positions = None
        if pixel_values is not None:
            placeholder_mask = input_ids == config.image_token_id
            num_images = pixel_values.shape[0] if isinstance(pixel_values, torch.Tensor) else len(pixel_values)
            num_placeholders = int(placeholder_mask.sum())
            if num_placeholders != num_images:
                raise ValueError(
                    f"input_ids hold {num_placeholders} image placeholder(s) but {num_images} image(s) were given; "
                    "there must be exactly one placeholder per image."
                )
            codes, code_mask, image_embeddings, vision_outputs = self._image_tokens(pixel_values, **tokenizer_kwargs)
            if codes is None:  # continuous-only tokenizer (GVT): its slots hold the placeholder id, overwritten below
                slot_ids = torch.full(
                    code_mask.shape, config.image_token_id, dtype=torch.long, device=code_mask.device
                )
            else:
                slot_ids = self.vocabulary.codes_to_ids(codes)
            spliced = splice_image_tokens(
                input_ids,
                attention_mask,
                placeholder_mask,
                slot_ids,
                code_mask,
                pad_token_id=self._pad_token_id(),
                labels=labels,
            )
            input_ids, attention_mask, labels = spliced.input_ids, spliced.attention_mask, spliced.labels
            spliced_positions = (spliced.image_batch_index, spliced.image_position)

        if labels is not None:
            visual_loss = config.loss_on_visual_tokens if loss_on_visual_tokens is None else loss_on_visual_tokens
            if not visual_loss:
                labels = labels.masked_fill(self.vocabulary.is_visual(labels), -100)

        inputs_embeds = None
        if return_embeddings or (config.image_input_mode == "features" and spliced_positions is not None):
            inputs_embeds = self.embed_input_ids(input_ids)
            if config.image_input_mode == "features" and spliced_positions is not None:
                values = image_embeddings[code_mask.bool()].to(inputs_embeds.dtype)
                inputs_embeds = inputs_embeds.index_put(spliced_positions, values)
        return LaVITMultimodalInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            inputs_embeds=inputs_embeds,
            image_token_ids=codes,
            image_attention_mask=code_mask,
            vision_outputs=vision_outputs,
        )

    def _pad_token_id(self) -> int:
        pad = self.config.text_config.pad_token_id
        if pad is None:
            pad = self.generation_config.pad_token_id if self.generation_config is not None else None
        if isinstance(pad, (list, tuple)):
            pad = pad[0]
        return 0 if pad is None else int(pad)

    # -- forward -------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_on_visual_tokens: bool | None = None,
        **kwargs,
    ) -> LaVITCausalLMOutputWithPast:
        r"""
        input_ids (`[B, T]`): text with `[IMG] <image> [/IMG]` per image (from [`GVTProcessor`]) or with visual ids
            already between `[IMG]` and `[/IMG]` (pre-tokenized).
        pixel_values (`[N, C, H, W]`): one image per placeholder, in reading order (row by row).
        labels (`[B, T]`): next-token targets aligned with `input_ids` (-100 to ignore); they are expanded with the
            sequence, and visual positions are ignored unless `loss_on_visual_tokens` (default
            `config.loss_on_visual_tokens`).

        With `pixel_values`, the logits cover the *expanded* sequence, returned as `expanded_input_ids` /
        `expanded_attention_mask` / `expanded_labels`. Position ids default to the running count of attended
        tokens (left padding gives the same positions as no padding).

        ETT: in `"codebook"` mode, in training mode with trainable tokenizer parameters (stage 2 of
        `gvt.ETTCallback`) and `config.ett_reconstruction_weight` (alpha) > 0, the tokenizer samples its keep
        decision (straight-through, as in its own training) and `loss = caption_loss + alpha * reconstruction_loss`,
        the tokenizer objective of the same pass (`gvt.training.losses.tokenizer_loss`).
        """
        cache = kwargs.pop("cache", None)  # transformers >= 5.24 passes the KV cache as `cache`
        if past_key_values is None:
            past_key_values = cache
        expanded = None
        ett = pixel_values is not None and self._ett_reconstruction_active()
        if pixel_values is not None:
            if inputs_embeds is not None:
                raise ValueError("Pass either pixel_values with input_ids, or inputs_embeds, not both.")
            if past_key_values is not None and past_key_values.get_seq_length() > 0:
                raise ValueError("pixel_values can only be given at the first (prefill) step.")
            original_labels = labels
            expanded = self.prepare_multimodal_inputs(
                input_ids,
                attention_mask,
                pixel_values,
                labels=labels,
                loss_on_visual_tokens=loss_on_visual_tokens,
                **({"selection": "sample"} if ett else {}),
            )
            input_ids, attention_mask, labels = expanded.input_ids, expanded.attention_mask, expanded.labels
            inputs_embeds = expanded.inputs_embeds
        elif inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids or inputs_embeds.")
            prepared = self.prepare_multimodal_inputs(
                input_ids, attention_mask, labels=labels, loss_on_visual_tokens=loss_on_visual_tokens
            )
            labels, inputs_embeds = prepared.labels, prepared.inputs_embeds
        elif labels is not None:
            visual_loss = self.config.loss_on_visual_tokens if loss_on_visual_tokens is None else loss_on_visual_tokens
            if not visual_loss:
                labels = labels.masked_fill(self.vocabulary.is_visual(labels), -100)

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
            **{CACHE_ARGUMENT: past_key_values},
            **kwargs,
        )
        loss, caption_loss, reconstruction_loss = outputs.loss, None, None
        if ett and outputs.loss is not None:
            caption_loss = outputs.loss
            reconstruction_loss = self.ett_reconstruction_loss(expanded.vision_outputs)
            scale = self.config.ett_reconstruction_weight
            num_items = kwargs.get("num_items_in_batch")
            if num_items is not None and original_labels is not None:
                # The Trainer normalises the caption loss by the label count of the whole (accumulated, gathered)
                # batch; weight this batch's reconstruction mean by its share of those labels, alike.
                local = original_labels[..., 1:].ne(-100).sum()
                scale = scale * local.to(caption_loss.dtype) / torch.as_tensor(num_items).to(caption_loss)
            loss = caption_loss + scale * reconstruction_loss
        return LaVITCausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            expanded_input_ids=expanded.input_ids if expanded is not None else None,
            expanded_attention_mask=expanded.attention_mask if expanded is not None else None,
            expanded_labels=expanded.labels if expanded is not None else None,
            image_token_ids=expanded.image_token_ids if expanded is not None else None,
            image_attention_mask=expanded.image_attention_mask if expanded is not None else None,
            caption_loss=caption_loss,
            reconstruction_loss=reconstruction_loss,
        )

    # -- ETT: the tokenizer objective in the joint loss -----------------------------------------------------------

    def _ett_reconstruction_active(self) -> bool:
        """True while ETT's reconstruction term applies: `"codebook"` mode, alpha > 0, training with gradients, and
        some parameter of the token selector / merger / quantizer trainable."""
        config = self.config
        if config.image_input_mode != "codebook" or config.ett_reconstruction_weight <= 0:
            return False
        if not (self.training and torch.is_grad_enabled()):
            return False
        tokenizer = self.vision_tokenizer
        parts = (tokenizer.token_selector, tokenizer.token_merger, tokenizer.quantizer)
        return any(p.requires_grad for part in parts for p in part.parameters())

    def ett_decoder_type(self) -> str:
        """The feature decoder ETT's reconstruction term uses (`"highres"` when present); it must map the codes back
        to one encoder feature per patch."""
        vision = self.config.vision_config
        if not vision.decoder_types:
            raise ValueError(
                "ETT's reconstruction term needs a feature decoder; vision_config.decoder_types is empty."
            )
        if vision.decoder_output_dim != vision.hidden_size or vision.decoder_num_queries != vision.num_patches:
            raise ValueError(
                "ETT's reconstruction term decodes the codes back to the encoder's patch features: it needs "
                f"vision_config.decoder_output_dim ({vision.decoder_output_dim}) == hidden_size ({vision.hidden_size}) "
                f"and decoder_num_queries ({vision.decoder_num_queries}) == num_patches ({vision.num_patches}); "
                "or set config.ett_reconstruction_weight = 0 to tune the tokenizer on the caption loss alone."
            )
        return "highres" if "highres" in vision.decoder_types else vision.decoder_types[0]

    def ett_reconstruction_loss(self, vision_outputs) -> torch.Tensor:
        """The tokenizer objective (`gvt.training.losses.tokenizer_loss`) of one tokenizer pass: cosine reconstruction
        of the (detached) encoder patch features from the straight-through codes, codebook / commitment terms and
        the keep-ratio penalty towards `config.ett_target_keep_ratio`."""
        try:  # not a relative import: remote-code repos load without `gvt`, which only ETT training needs
            from gvt.training.losses import straight_through_codes, tokenizer_loss
        except ImportError as error:
            raise ImportError("ETT's joint loss needs the `gvt` package (`pip install gvt`).") from error
        decoder = self.vision_tokenizer.decoders[self.ett_decoder_type()]
        codes = straight_through_codes(vision_outputs.quantizer_inputs, vision_outputs.quantized)
        decoded = decoder(codes, vision_outputs.attention_mask).decoded_features
        target = vision_outputs.encoder_hidden_states[:, 1:].detach()
        return tokenizer_loss(vision_outputs, decoded, target, self.config.ett_target_keep_ratio).loss

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

    def _generate_expanded(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None,
        pixel_values: torch.FloatTensor | None,
        logits_processor: LogitsProcessorList | None,
        extra_processor: LogitsProcessor,
        **kwargs,
    ):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prepared = self.prepare_multimodal_inputs(input_ids, attention_mask, pixel_values, return_embeddings=False)
        processors = LogitsProcessorList(logits_processor or [])
        processors.append(extra_processor)
        generate_inputs = {"input_ids": prepared.input_ids, "attention_mask": prepared.attention_mask}
        if prepared.inputs_embeds is not None:
            generate_inputs["inputs_embeds"] = prepared.inputs_embeds
        return super().generate(**generate_inputs, logits_processor=processors, **kwargs), prepared.input_ids.shape[1]

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

        Placeholders are expanded here, once, before the parent `generate` runs with a KV cache (greedy, sampling,
        beam search, left-padded batches all work). The returned sequences start with the given `input_ids`
        (unexpanded) followed by the new tokens. `generation_mode="image"` calls [`generate_images`].
        """
        if generation_mode == "image":
            return self.generate_images(
                input_ids, attention_mask, pixel_values, logits_processor=logits_processor, **kwargs
            )
        if generation_mode != "text":
            raise ValueError(f"generation_mode must be 'text' or 'image', got {generation_mode!r}.")
        if input_ids is None:
            if kwargs.get("inputs_embeds") is not None:  # plain language-model generation from embeddings
                processors = LogitsProcessorList(logits_processor or [])
                processors.append(self.text_logits_processor())
                return super().generate(attention_mask=attention_mask, logits_processor=processors, **kwargs)
            raise ValueError("generate needs input_ids (from the processor).")
        output, expanded_length = self._generate_expanded(
            input_ids, attention_mask, pixel_values, logits_processor, self.text_logits_processor(), **kwargs
        )
        return self._restore_prompt(output, input_ids, expanded_length)

    @staticmethod
    def _restore_prompt(output, input_ids: torch.LongTensor, expanded_length: int):
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        repeats = sequences.shape[0] // input_ids.shape[0]
        prompt = input_ids.repeat_interleave(repeats, dim=0).to(sequences.device)
        sequences = torch.cat((prompt, sequences[:, expanded_length:]), dim=1)
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    @torch.no_grad()
    def generate_images(
        self,
        input_ids: torch.LongTensor,
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
        holds image placeholders and `pixel_values` are given).

        `[IMG]` is appended to prompts that do not end with it; after it only visual ids and `[/IMG]` can be
        produced, and generation stops at `[/IMG]` (or after `max_new_tokens`, default one per patch + 1).
        `guidance_scale` > 1 applies classifier-free guidance on the logits against an unconditional prompt
        (`negative_input_ids`, default `<s> [IMG]`, or `[IMG]` without a BOS token); 1 or None means no guidance.
        Sampling settings (`do_sample`, `top_k`, `top_p`, `temperature`, ...) pass to `generate`.
        """
        config = self.config
        if input_ids is None:
            raise ValueError("generate_images needs input_ids (the prompt).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        start = config.image_start_token_id
        if not bool((input_ids[:, -1] == start).all()):
            if bool((input_ids[:, -1] == start).any()):
                raise ValueError("Either every prompt or none must end with the image-start token.")
            input_ids = torch.cat((input_ids, input_ids.new_full((input_ids.shape[0], 1), start)), dim=1)
            attention_mask = torch.cat((attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))), dim=1)
        if guidance_scale is not None and guidance_scale != 1 and negative_input_ids is None:
            bos = config.text_config.bos_token_id
            prefix = [bos] if isinstance(bos, int) else []
            negative_input_ids = torch.tensor([prefix + [start]] * input_ids.shape[0], device=input_ids.device)
        if max_new_tokens is None:
            max_new_tokens = config.vision_config.num_patches + 1
        kwargs.setdefault("pad_token_id", self._pad_token_id())
        # Image generation samples one sequence per prompt: a captioning generation config (beams) must not leak in.
        kwargs.setdefault("num_beams", 1)
        output, expanded_length = self._generate_expanded(
            input_ids,
            attention_mask,
            pixel_values,
            logits_processor,
            self.image_logits_processor(),
            guidance_scale=guidance_scale,
            negative_prompt_ids=negative_input_ids,
            negative_prompt_attention_mask=negative_attention_mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=config.image_end_token_id,
            return_dict_in_generate=False,
            **kwargs,
        )
        generated = output[:, expanded_length:]
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
    "LaVITMultimodalInputs",
    "AllowedTokensLogitsProcessor",
]
