"""GVTProcessor: a text tokenizer + [`GVTImageProcessor`], weightless like every transformers processor.

Two ways to call it, giving the same model outputs:

- `processor(images=..., text=...)`: `[IMG] <image> [/IMG]` per image in the text, plus `pixel_values`; the model
  tokenizes each image and splices its own dynamic-length tokens in place of `<image>`.
- `processor(images=..., text=..., vision_tokenizer=model.vision_tokenizer)`: `input_ids` that already hold each
  image's visual token ids between `[IMG]` and `[/IMG]`, no pixels (pre-tokenize a dataset once with `datasets.map`).

Only relative imports: this file and its imports are copied into saved repos for `trust_remote_code=True`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .vocabulary import GVTVocabulary, splice_image_tokens

_TEXT_KWARGS = ("padding", "truncation", "max_length", "add_special_tokens", "pad_to_multiple_of", "padding_side")


class GVTProcessor(ProcessorMixin):
    r"""
    Args:
        image_processor ([`GVTImageProcessor`]): turns images into `pixel_values`.
        tokenizer ([`PreTrainedTokenizerFast`]): a text tokenizer that knows `image_token`, `image_start_token`,
            `image_end_token` as special tokens.
        chat_template (`str`, *optional*): Jinja template; image items of a message become `image_token`.
        image_token, image_start_token, image_end_token (`str`): the placeholder, `[IMG]`, `[/IMG]`.
        visual_token_offset (`int`, *optional*): LLM id of visual code 0 (default: the tokenizer's length).
        codebook_size (`int`, *optional*): number of visual codes (needed only to validate pre-tokenized ids).

    A text without any placeholder gets one placeholder per image prepended (LaVIT's `[IMG] visual [/IMG] prompt`
    layout): one image per text, or all images before a single text. Otherwise placeholders and images must match
    in number.
    """

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
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def _offset(self) -> int:
        return len(self.tokenizer) if self.visual_token_offset is None else self.visual_token_offset

    # -- text layout ---------------------------------------------------------------------------------------------------

    def _layout_text(self, text: list[str], images: list[Any] | None, nested: list[int] | None) -> list[str]:
        """Check placeholders against images; prepend placeholders where none were written; wrap each in [IMG] ..
        [/IMG]."""
        token = self.image_token
        counts = [sample.count(token) for sample in text]
        num_images = 0 if images is None else len(images)
        if sum(counts) == 0 and num_images:
            if nested is not None and len(nested) == len(text):
                text = [token * n + sample for n, sample in zip(nested, text)]
            elif num_images == len(text):
                text = [token + sample for sample in text]
            elif len(text) == 1:
                text = [token * num_images + text[0]]
            else:
                raise ValueError(
                    f"Got {num_images} images for {len(text)} texts without image placeholders ({token!r}); put one "
                    f"{token!r} in the text where each image goes."
                )
        elif sum(counts) != num_images:
            raise ValueError(
                f"The text holds {sum(counts)} image placeholder(s) ({token!r}) but {num_images} image(s) were given; "
                "there must be exactly one placeholder per image."
            )
        elif nested is not None and len(nested) == len(text) and counts != nested:
            raise ValueError(f"Placeholders per text {counts} do not match images per text {nested}.")
        wrapped = self.image_start_token + token + self.image_end_token
        return [sample.replace(wrapped, token).replace(token, wrapped) for sample in text]

    @staticmethod
    def _flatten_images(images: Any) -> tuple[list[Any] | None, list[int] | None]:
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
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` (one placeholder per image, see the class docstring) and preprocess `images`.

        With `vision_tokenizer` (a [`GVTVisionTokenizer`]), the images are tokenized here and their visual ids
        written into `input_ids`; no `pixel_values` are returned. Extra keyword arguments go to the tokenizer
        (`padding`, `truncation`, `max_length`, ...) or the image processor (anything else it accepts).
        """
        if text is None and images is None:
            raise ValueError("Give text, images or both.")
        flat_images, nested = self._flatten_images(images)
        if text is None:
            text = [""] * (len(nested) if nested is not None else len(flat_images))
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not all(isinstance(sample, str) for sample in texts):
            raise TypeError("text must be a string or a list of strings.")
        texts = self._layout_text(texts, flat_images, nested)

        text_kwargs = {key: kwargs.pop(key) for key in _TEXT_KWARGS if key in kwargs}
        kwargs.pop("images_kwargs", None)
        kwargs.pop("text_kwargs", None)
        if len(texts) > 1:
            text_kwargs.setdefault("padding", True)
        encoding = self.tokenizer(texts, return_tensors="pt", **text_kwargs)
        input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
        expected = 0 if flat_images is None else len(flat_images)
        found = int((input_ids == self.image_token_id).sum())
        if found != expected:
            raise ValueError(
                f"After tokenization the text holds {found} image placeholder(s) for {expected} image(s); was it "
                "truncated? Raise max_length or disable truncation."
            )

        data: dict[str, Any] = {}
        if flat_images is not None:
            accepted = getattr(getattr(self.image_processor, "valid_kwargs", None), "__annotations__", {})
            image_kwargs = {key: value for key, value in kwargs.items() if key in accepted}
            pixel_values = self.image_processor(flat_images, return_tensors="pt", **image_kwargs)["pixel_values"]
            if vision_tokenizer is None:
                data["pixel_values"] = pixel_values
            else:
                input_ids, attention_mask = self.tokenize_images(
                    input_ids, attention_mask, pixel_values, vision_tokenizer
                )
        data["input_ids"], data["attention_mask"] = input_ids, attention_mask
        if return_tensors is None:
            data = {
                key: value.tolist() if key != "pixel_values" else list(value.numpy()) for key, value in data.items()
            }
            if single:
                data = {key: value[0] if key != "pixel_values" else value for key, value in data.items()}
        return BatchFeature(data=data, tensor_type=return_tensors)

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
            image_start_token_id=self.tokenizer.convert_tokens_to_ids(self.image_start_token),
            image_end_token_id=self.tokenizer.convert_tokens_to_ids(self.image_end_token),
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

    def _drop_visual(self, sequence) -> list[int]:
        if isinstance(sequence, torch.Tensor):
            sequence = sequence.tolist()
        elif hasattr(sequence, "tolist"):
            sequence = sequence.tolist()
        offset = self._offset()
        return [int(token) for token in sequence if 0 <= int(token) < offset]

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """Decode text; visual ids (and any id outside the text vocabulary) are dropped."""
        return self.tokenizer.batch_decode([self._drop_visual(sequence) for sequence in sequences], **kwargs)

    def decode(self, sequence, **kwargs) -> str:
        """Decode one sequence; visual ids are dropped."""
        if isinstance(sequence, torch.Tensor) and sequence.ndim == 2:
            return self.batch_decode(sequence, **kwargs)
        return self.tokenizer.decode(self._drop_visual(sequence), **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """Decode generated sequences for the image-text-to-text pipeline (visual ids dropped)."""
        if isinstance(generated_outputs, torch.Tensor) and generated_outputs.ndim == 1:
            generated_outputs = generated_outputs[None]
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


__all__ = ["GVTProcessor"]
