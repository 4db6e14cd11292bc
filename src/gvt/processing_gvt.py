"""GVTProcessor: a text tokenizer + [`GVTImageProcessor`], weightless like every transformers processor.

Two ways to call it, giving the same model outputs:

- `processor(images=..., text=...)`: `[IMG] <image> [/IMG]` per image in the text, plus `pixel_values`; the model
  tokenizes each image and splices its own dynamic-length tokens in place of `<image>`.
- `processor(images=..., text=..., vision_tokenizer=model.vision_tokenizer)`: `input_ids` that already hold each
  image's visual token ids between `[IMG]` and `[/IMG]`, no pixels (pre-tokenize a dataset once with `datasets.map`).

Keyword arguments follow transformers' processor conventions ([`GVTProcessorKwargs`]): flat (`padding=...`,
`input_bit_depth=...`) or per modality (`text_kwargs={...}`, `images_kwargs={...}`); the same argument given both
ways raises.

Only relative imports: this file and its imports are copied into saved repos for `trust_remote_code=True`.
"""

import re
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack

from .image_processing_gvt import GVTImageProcessorKwargs, restoring_auto_map
from .vocabulary import GVTVocabulary, splice_image_tokens

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}"
    "{%- set parts = message['content'] or [] -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- for part in parts if part['type'] == 'text' -%}{{ ' ' + part['text'] }}{%- endfor -%}"
    "{{- eos_token -}}"
    "{%- endgeneration -%}"
    "{%- else -%}"
    "{%- for part in parts -%}"
    "{%- if part['type'] == 'image' -%}<image>"
    "{%- elif part['type'] == 'text' -%}{{ (' ' if not loop.first and loop.previtem['type'] == 'text' else '') "
    "+ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
"""The chat layout of LaVIT-style training (`gvt.training.GVTDataCollator`, the embedded default's recipe):
`<s> [IMG] <image> [/IMG] prompt answer </s>`, with no role markers. A user (or system) turn is its images and texts
in order, an assistant turn ` answer</s>` inside `{% generation %}` (assistant masks); the generation prompt is
empty, because the model answers right after the prompt. Chat messages and a plain `processor(images, text=prompt)`
give the same ids."""


class GVTProcessorKwargs(ProcessingKwargs, total=False):
    """Keyword arguments of [`GVTProcessor.__call__`]: `text_kwargs` go to the tokenizer, `images_kwargs` to
    [`GVTImageProcessor`] (e.g. `input_bit_depth`, `min_size`), flat or nested."""

    images_kwargs: GVTImageProcessorKwargs


class GVTProcessor(ProcessorMixin):
    r"""
    Args:
        image_processor ([`GVTImageProcessor`]): turns images into `pixel_values`.
        tokenizer ([`PreTrainedTokenizerFast`]): a text tokenizer that knows `image_token`, `image_start_token`,
            `image_end_token` as special tokens.
        chat_template (`str`, *optional*): Jinja template; image items of a message become `image_token`. Defaults
            to [`CHAT_TEMPLATE`], the layout the models are trained with.
        image_token, image_start_token, image_end_token (`str`): the placeholder, `[IMG]`, `[/IMG]`.
        visual_token_offset (`int`, *optional*): LLM id of visual code 0 (default: the tokenizer's length).
        codebook_size (`int`, *optional*): number of visual codes (needed only to validate pre-tokenized ids).

    A text without any placeholder gets one placeholder per image prepended (LaVIT's `[IMG] visual [/IMG] prompt`
    layout): one image per text, or all images before a single text, or per text with nested image lists. Otherwise
    placeholders and images must match in number.

    Decoding (`batch_decode`, `decode`, `post_process_image_text_to_text`) folds each image's tokens (its visual ids,
    or the `<image>` run of a model that reads features) back into one `<image>`, so a prompt decodes the same before
    and after the model expanded it; `skip_special_tokens=True` drops images and image markers altogether.
    """

    valid_processor_kwargs = GVTProcessorKwargs
    # A batch of texts is padded to its longest text unless told otherwise (the tokenizer's own default is no padding).
    text_kwargs = {"padding": True}

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        image_start_token: str = "[IMG]",
        image_end_token: str = "[/IMG]",
        visual_token_offset: int | None = None,
        codebook_size: int | None = None,
        **kwargs,
    ):
        self.image_token = image_token
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        self.visual_token_offset = visual_token_offset
        self.codebook_size = codebook_size
        super().__init__(
            image_processor, tokenizer, chat_template=CHAT_TEMPLATE if chat_template is None else chat_template
        )
        for name, token in (
            ("image_token", image_token),
            ("image_start_token", image_start_token),
            ("image_end_token", image_end_token),
        ):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"The tokenizer has no token for {name}={token!r}; add it as a special token first.")
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_start_token_id = tokenizer.convert_tokens_to_ids(image_start_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as transformers does (with `auto_map` for `trust_remote_code=True`), without leaving the `auto_map`
        that saving attaches on this object and its image processor: a reloaded processor compares equal."""
        with restoring_auto_map(self, *(getattr(self, name) for name in self.get_attributes())):
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def _offset(self) -> int:
        return len(self.tokenizer) if self.visual_token_offset is None else self.visual_token_offset

    # -- text layout ---------------------------------------------------------------------------------------------------

    def replace_image_token(self, image_inputs: dict | None = None, image_idx: int = 0, **kwargs) -> str:
        """What one image placeholder becomes in the text: `[IMG] <image> [/IMG]` (the model expands `<image>`)."""
        return self.image_start_token + self.image_token + self.image_end_token

    def _layout_text(
        self, texts: list[str], num_images: int, per_text: list[int] | None
    ) -> tuple[list[str], list[list[dict[str, Any]]]]:
        """Check placeholders against images, prepend placeholders where none were written, and wrap each in
        `[IMG] .. [/IMG]`. Returns the texts and, per text, where the text changed (transformers'
        `text_replacement_offsets`, which keep assistant masks aligned)."""
        token = self.image_token
        counts = [sample.count(token) for sample in texts]
        if sum(counts) == 0 and num_images:
            if per_text is not None:
                prepended = per_text
            elif num_images == len(texts):
                prepended = [1] * len(texts)
            elif len(texts) == 1:
                prepended = [num_images]
            else:
                raise ValueError(
                    f"Got {num_images} images for {len(texts)} texts without image placeholders ({token!r}); put one "
                    f"{token!r} in the text where each image goes, or nest the images per text ([[image], ...])."
                )
        else:
            prepended = [0] * len(texts)
            if sum(counts) != num_images:
                raise ValueError(
                    f"The text holds {sum(counts)} image placeholder(s) ({token!r}) but {num_images} image(s) were "
                    f"given: the number of {token!r} tokens in the prompts should be the same as the number of images."
                )
        if per_text is not None and len(per_text) != len(texts):
            raise ValueError(f"Got {len(per_text)} lists of images for {len(texts)} texts; give one list per text.")
        if per_text is not None and sum(counts) and counts != per_text:
            raise ValueError(f"Placeholders per text {counts} do not match images per text {per_text}.")

        # Prepended placeholders go after a leading BOS written by a chat template.
        bos = self.tokenizer.bos_token
        starts = [
            len(bos) if count and bos and sample.startswith(bos) else 0 for count, sample in zip(prepended, texts)
        ]
        texts = [sample[:at] + token * count + sample[at:] for at, count, sample in zip(starts, prepended, texts)]
        texts, offsets = self.get_text_with_replacements(
            texts, images_replacements=[self.replace_image_token()] * num_images
        )
        for at, count, changes in zip(starts, prepended, offsets):
            if count:  # the prepended placeholders were not in the caller's text: one insertion
                inserted, kept = changes[:count], changes[count:]
                shift = count * len(token)
                changes[:] = [
                    {
                        "type": "image",
                        "span": (at, at),
                        "new_span": (at, inserted[-1]["new_span"][1]),
                        "text": "",
                        "replacement": "".join(change["replacement"] for change in inserted),
                    }
                ] + [{**change, "span": (change["span"][0] - shift, change["span"][1] - shift)} for change in kept]
        return texts, offsets

    def get_text_with_replacements(
        self,
        text: list[str],
        images_replacements: list[str] = (),
        videos_replacements: list[str] = (),
        audio_replacements: list[str] = (),
    ) -> tuple[list[str], list[list[dict[str, Any]]]]:
        """Replace each `<image>` of `text` by the next of `images_replacements`; a placeholder already written as
        `[IMG] <image> [/IMG]` uses up its replacement and stays as it is. Returns the texts and, per text, the
        changes made (transformers' `text_replacement_offsets`: `span` in the given text, `new_span` in the result),
        which keep assistant masks aligned."""
        if videos_replacements or audio_replacements:
            raise ValueError("GVTProcessor takes images and text only.")
        token, wrapped = self.image_token, self.replace_image_token()
        pattern = re.compile(f"{re.escape(wrapped)}|{re.escape(token)}")
        replacements = iter(images_replacements)
        laid_out, offsets = [], []
        for sample in text:
            pieces, changes, shift, last = [], [], 0, 0
            for match in pattern.finditer(sample):
                start, end = match.span()
                replacement = next(replacements)
                pieces.append(sample[last:start])
                if match.group() == token:
                    new_start = start + shift
                    changes.append(
                        {
                            "type": "image",
                            "span": (start, end),
                            "new_span": (new_start, new_start + len(replacement)),
                            "text": token,
                            "replacement": replacement,
                        }
                    )
                    shift += len(replacement) - (end - start)
                    pieces.append(replacement)
                else:
                    pieces.append(match.group())
                last = end
            pieces.append(sample[last:])
            laid_out.append("".join(pieces))
            offsets.append(changes)
        return laid_out, offsets

    @staticmethod
    def _flatten_images(images: Any) -> tuple[list[Any] | None, list[int] | None]:
        """A flat list of images and, for nested lists (one list per text), the number of images per text."""
        if images is None:
            return None, None
        if isinstance(images, (list, tuple)):
            if images and all(isinstance(item, (list, tuple)) for item in images):
                return [image for group in images for image in group], [len(group) for group in images]
            return list(images), None
        if hasattr(images, "ndim") and getattr(images, "ndim", 0) == 4:
            return list(images), None
        return [images], None

    # -- call ----------------------------------------------------------------------------------------------------------

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        vision_tokenizer=None,
        **kwargs: Unpack[GVTProcessorKwargs],
    ) -> BatchFeature:
        """Tokenize `text` (one placeholder per image, see the class docstring) and preprocess `images`.

        Args:
            images: one image, a list, or one list per text (PIL images, arrays, tensors, paths, encoded bytes).
            text (`str` or `list[str]`, *optional*): the prompts; omitted, each image gets the caption layout.
            vision_tokenizer ([`GVTVisionTokenizer`], *optional*): tokenize the images here and write their visual
                ids into `input_ids` (no `pixel_values` are returned).
            **kwargs: [`GVTProcessorKwargs`]: tokenizer arguments (`padding`, `truncation`, `max_length`,
                `return_offsets_mapping`, ...), image processor arguments (`input_bit_depth`, `size`, ...),
                `return_tensors`, `return_mm_token_type_ids`, `return_text_replacement_offsets`; flat or nested in
                `text_kwargs` / `images_kwargs`.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask` (and whatever else the tokenizer was asked for),
            `pixel_values` when images were given. A single string without `return_tensors` gives unbatched ids, as
            the tokenizer does.
        """
        for modality in ("videos", "audio"):  # `apply_chat_template` passes them as None
            if kwargs.pop(modality, None) is not None:
                raise ValueError(f"GVTProcessor takes images and text only (got {modality}).")
        if text is None and images is None:
            raise ValueError("Give text, images or both.")
        if isinstance(text, (list, tuple)) and len(text) == 0:
            raise ValueError("`text` is an empty list; give at least one string, or text=None for images alone.")
        if text is not None and not isinstance(text, str):
            if not isinstance(text, (list, tuple)) or not all(isinstance(sample, str) for sample in text):
                raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
        flat_images, per_text = self._flatten_images(images)
        if flat_images is not None and not flat_images:
            raise ValueError("`images` is an empty list; give at least one image, or images=None for text alone.")

        output_kwargs = self._merge_kwargs(
            GVTProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, images_kwargs = output_kwargs["text_kwargs"], output_kwargs["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None) or images_kwargs.pop("return_tensors", None)
        images_kwargs.pop("return_tensors", None)
        # Processor-level flags (transformers mirrors them into `text_kwargs` for backward compatibility).
        flags = {}
        for flag in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
            flags[flag] = bool(text_kwargs.pop(flag, None) or output_kwargs.get(flag))

        if text is None:
            text = [""] * (len(per_text) if per_text is not None else len(flat_images))
        single = isinstance(text, str)
        texts, replacement_offsets = self._layout_text(
            [text] if single else list(text), 0 if flat_images is None else len(flat_images), per_text
        )

        pretokenize = vision_tokenizer is not None and flat_images is not None
        if pretokenize:
            unsupported = [
                key for key in ("return_offsets_mapping", "return_overflowing_tokens") if text_kwargs.get(key)
            ]
            if unsupported or flags["return_text_replacement_offsets"]:
                raise ValueError(
                    f"{unsupported or 'return_text_replacement_offsets'} cannot be combined with `vision_tokenizer=`: "
                    "the visual ids change every position after an image."
                )
        encoding = self.tokenizer(texts, return_tensors="pt" if pretokenize else None, **text_kwargs)
        expected = 0 if flat_images is None else len(flat_images)
        ids = encoding["input_ids"]
        found = (
            int((ids == self.image_token_id).sum())
            if pretokenize
            else sum(row.count(self.image_token_id) for row in ids)
        )
        if found != expected:
            raise ValueError(
                f"After tokenization the text holds {found} image placeholder(s) for {expected} image(s); was it "
                "truncated? Raise max_length or disable truncation."
            )

        data: dict[str, Any] = dict(encoding)
        if flat_images is not None:
            pixel_values = self.image_processor(
                flat_images, return_tensors="pt" if pretokenize else return_tensors, **images_kwargs
            )["pixel_values"]
            if pretokenize:
                data["input_ids"], data["attention_mask"] = self.tokenize_images(
                    encoding["input_ids"], encoding["attention_mask"], pixel_values, vision_tokenizer
                )
                data = {key: data[key] for key in ("input_ids", "attention_mask")}
                if return_tensors is None:
                    data = {key: value.tolist() for key, value in data.items()}
            else:
                data["pixel_values"] = pixel_values
        if flags["return_mm_token_type_ids"]:
            data["mm_token_type_ids"] = [
                [int(token_id == self.image_token_id or token_id >= self._offset()) for token_id in row]
                for row in (
                    data["input_ids"].tolist() if isinstance(data["input_ids"], torch.Tensor) else data["input_ids"]
                )
            ]
        if single and return_tensors is None:
            data = {key: value if key == "pixel_values" else value[0] for key, value in data.items()}
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        if flags["return_text_replacement_offsets"]:
            batch["text_replacement_offsets"] = (
                replacement_offsets[0] if single and return_tensors is None else replacement_offsets
            )
        return batch

    @torch.no_grad()
    def tokenize_images(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor, vision_tokenizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace each placeholder of `input_ids` by its image's visual ids (one splice), re-padded on the
        tokenizer's padding side."""
        codebook_size = vision_tokenizer.config.codebook_size
        if self.codebook_size is not None and self.codebook_size != codebook_size:
            raise ValueError(
                f"The vision tokenizer has {codebook_size} codes but this processor was set up for {self.codebook_size}."
            )
        vocabulary = GVTVocabulary(
            image_token_id=self.image_token_id,
            image_start_token_id=self.image_start_token_id,
            image_end_token_id=self.image_end_token_id,
            visual_token_offset=self._offset(),
            codebook_size=codebook_size,
        )
        device = next(vision_tokenizer.parameters()).device
        dtype = next(vision_tokenizer.parameters()).dtype
        tokens = vision_tokenizer.tokenize(pixel_values.to(device=device, dtype=dtype))
        pad = self.tokenizer.pad_token_id
        spliced = splice_image_tokens(
            input_ids,
            attention_mask,
            input_ids == self.image_token_id,
            vocabulary.codes_to_ids(tokens.token_ids.cpu()),
            tokens.attention_mask.cpu(),
            pad_token_id=0 if pad is None else pad,
            left_padding=self.tokenizer.padding_side == "left",
        )
        return spliced.input_ids, spliced.attention_mask

    # -- decoding ------------------------------------------------------------------------------------------------------

    def _fold_images(self, sequence, skip_special_tokens: bool) -> list[int]:
        """Text ids of one sequence: each run of image tokens (visual ids, `<image>` placeholders, ids past the text
        vocabulary) becomes one `<image>`; with `skip_special_tokens`, images and `[IMG]` / `[/IMG]` are dropped."""
        if hasattr(sequence, "tolist"):
            sequence = sequence.tolist()
        offset, image = self._offset(), self.image_token_id
        markers = (self.image_start_token_id, self.image_end_token_id)
        folded: list[int] = []
        for token in sequence:
            token = int(token)
            if token < 0:  # e.g. -100 label padding
                continue
            if token >= offset or token == image:
                if not skip_special_tokens and not (folded and folded[-1] == image):
                    folded.append(image)
                continue
            if skip_special_tokens and token in markers:
                continue
            folded.append(token)
        return folded

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        """Decode a batch; each image's tokens decode as one `<image>` (nothing with `skip_special_tokens=True`)."""
        folded = [self._fold_images(sequence, skip_special_tokens) for sequence in sequences]
        return self.tokenizer.batch_decode(folded, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, sequence, skip_special_tokens: bool = False, **kwargs) -> str:
        """Decode one sequence; each image's tokens decode as one `<image>` (nothing with `skip_special_tokens`)."""
        if isinstance(sequence, torch.Tensor) and sequence.ndim == 2:
            return self.batch_decode(sequence, skip_special_tokens=skip_special_tokens, **kwargs)
        folded = self._fold_images(sequence, skip_special_tokens)
        return self.tokenizer.decode(folded, skip_special_tokens=skip_special_tokens, **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decode generated sequences for the image-text-to-text pipeline: a prompt that the model expanded (visual
        ids or one `<image>` per token) decodes like the prompt the processor wrote, so the pipeline can strip it."""
        if isinstance(generated_outputs, torch.Tensor) and generated_outputs.ndim == 1:
            generated_outputs = generated_outputs[None]
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


__all__ = ["GVTProcessor", "GVTProcessorKwargs", "CHAT_TEMPLATE"]
