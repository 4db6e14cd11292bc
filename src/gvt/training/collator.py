"""GVTDataCollator: `datasets` rows (image + text, or image + prompt + answer) -> a training batch for
[`LaVITForCausalLM`] under `transformers.Trainer`.

Per row the collator loads the image(s) (PIL images, paths, encoded bytes, arrays, or `datasets` `Image` dicts
`{"bytes", "path"}`), lays out the text with one `[IMG] <image> [/IMG]` per image (prepended, or where the text
already holds `<image>` placeholders: image-text interleaving), tokenizes it and masks the labels: by default only
the caption (`text` rows) or the answer (`prompt` + `answer` rows) is supervised; prompt, image and padding
positions are -100. Visual ids that the model splices in for each image are supervised only when
`config.loss_on_visual_tokens` is set (the model decides, not the collator). Rows that already hold `input_ids`
(pre-tokenized with `processor(..., vision_tokenizer=...)`) pass through without pixels. Rows that hold
`visual_token_ids` (the codebook indices of their image, or a list of them, one per image: the shards of
`gvt pretokenize`, read with [`gvt.pretokenize.load_pretokenized`]) are laid out like image rows, with each image's
visual ids in place of its placeholder, and need no pixels either (models whose ids carry the image: `"ids"` and
`"codebook"` modes).

Use with `TrainingArguments(remove_unused_columns=False)`: the collator needs the raw columns, which the Trainer
would otherwise drop because `forward` does not name them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from transformers.utils import logging

from ..image_processing_gvt import load_image

logger = logging.get_logger(__name__)


class GVTDataCollator:
    r"""
    Args:
        processor ([`GVTProcessor`]): its tokenizer and image processor do the work.
        image_column (`str`): the image column; a row may hold one image or a list (one per `<image>` placeholder).
        text_column (`str`): the caption column (the whole text is supervised).
        prompt_column, answer_column (`str`): used when the row has no `text_column`: the prompt is context, the
            answer supervised.
        supervise (`"answer"` or `"all"`): `"all"` also trains on the prompt text and the `[IMG]` / `[/IMG]` tokens.
        on_bad_image (`"raise"` or `"skip"`): an image that fails to decode raises a `ValueError`, or drops the row
            with a warning and counts it in `num_skipped`.
        allow_text_only (`bool`): accept rows without an image (plain language-model rows) instead of raising.
        image_root (`str`, *optional*): folder that relative image paths are resolved against (json lines, parquet).
        max_length (`int`, *optional*): truncate the text part after the last image placeholder to this many ids
            (images are expanded later, by the model); a row whose placeholders do not fit raises.
        add_eos (`bool`): end each supervised text with the tokenizer's EOS token.
        pad_to_multiple_of (`int`, *optional*): pad the batch length up to a multiple.
        separator (`str`): joins prompt and answer (and the image block and a placeholder-free text).
        visual_token_ids_column (`str`): the column of pre-tokenized images (codebook indices, one list per image);
            a row that has it is used instead of its image column. Under `supervise="all"` the visual ids are labels
            too, which the model ignores unless `config.loss_on_visual_tokens` is set.

    Returns (from `__call__`): a dict of `input_ids`, `attention_mask`, `labels` (`[B, T]`, right-padded) and, when
    any row has an image, `pixel_values` (`[N, C, H, W]`, one per placeholder in reading order).
    """

    def __init__(
        self,
        processor,
        *,
        image_column: str = "image",
        text_column: str = "text",
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        supervise: Literal["answer", "all"] = "answer",
        on_bad_image: Literal["raise", "skip"] = "raise",
        allow_text_only: bool = False,
        image_root: str | os.PathLike | None = None,
        max_length: int | None = None,
        add_eos: bool = True,
        pad_to_multiple_of: int | None = None,
        separator: str = " ",
        visual_token_ids_column: str = "visual_token_ids",
    ):
        if supervise not in ("answer", "all"):
            raise ValueError(f"supervise must be 'answer' or 'all', got {supervise!r}.")
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}.")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        for name in ("tokenizer", "image_processor", "image_token", "image_start_token", "image_end_token"):
            if not hasattr(processor, name):
                raise TypeError(f"processor must be a GVTProcessor (it has no {name!r}).")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_column = image_column
        self.text_column = text_column
        self.prompt_column = prompt_column
        self.answer_column = answer_column
        self.supervise = supervise
        self.on_bad_image = on_bad_image
        self.allow_text_only = allow_text_only
        self.image_root = None if image_root is None else os.fspath(image_root)
        self.max_length = max_length
        self.add_eos = add_eos
        self.pad_to_multiple_of = pad_to_multiple_of
        self.separator = separator
        self.visual_token_ids_column = visual_token_ids_column
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.num_skipped = 0
        """Rows dropped because an image failed to decode (`on_bad_image="skip"`), over this collator's life (per
        process: data loader workers count in their own copy)."""

    # -- one row -------------------------------------------------------------------------------------------------------

    def _load(self, image: Any) -> Any:
        if isinstance(image, Mapping):  # a `datasets` Image feature with decode=False
            if image.get("bytes"):
                image = image["bytes"]
            elif image.get("path"):
                image = image["path"]
            else:
                raise ValueError("the image dict holds neither 'bytes' nor 'path'")
        if isinstance(image, (str, os.PathLike)) and self.image_root is not None and not os.path.isabs(image):
            image = os.path.join(self.image_root, image)
        return load_image(image)

    def _row_images(self, row: Mapping[str, Any], index: int) -> list[Any]:
        column = self.image_column
        images = row.get(column)
        if images is None and column == "image":
            images = row.get("images")
        if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
            if self.allow_text_only:
                return []
            raise ValueError(
                f"Row {index} of the batch has no image (column {column!r} is missing or empty; it has columns "
                f"{sorted(row)}); pass allow_text_only=True to train on text-only rows."
            )
        return list(images) if isinstance(images, (list, tuple)) else [images]

    def _row_texts(self, row: Mapping[str, Any], index: int) -> tuple[str, str]:
        """(context, supervised text) of a row."""
        text = row.get(self.text_column)
        if text is not None:
            if not isinstance(text, str):
                raise TypeError(
                    f"Row {index}: column {self.text_column!r} must be a string, got {type(text).__name__}."
                )
            return "", text
        prompt, answer = row.get(self.prompt_column), row.get(self.answer_column)
        if answer is None:
            missing = self.text_column if prompt is None else self.answer_column
            raise ValueError(
                f"Row {index} of the batch has no text: column {missing!r} is missing or None (give a "
                f"{self.text_column!r} column, or {self.prompt_column!r} + {self.answer_column!r}); it has columns "
                f"{sorted(row)}."
            )
        return ("" if prompt is None else str(prompt)), str(answer)

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"] if text else []

    def _tokenize_row(self, row: Mapping[str, Any], index: int, num_images: int) -> tuple[list[int], list[int]]:
        processor = self.processor
        context, target = self._row_texts(row, index)
        token = processor.image_token
        wrapped = processor.image_start_token + token + processor.image_end_token
        placed = context.count(token) + target.count(token)
        if placed == 0 and num_images:
            context = self.separator.join(part for part in (token * num_images, context) if part)
        elif placed != num_images:
            raise ValueError(
                f"Row {index}: the text holds {placed} image placeholder(s) ({token!r}) but the row has {num_images} "
                "image(s); put one placeholder per image, or none (images then go first)."
            )
        context = context.replace(wrapped, token).replace(token, wrapped)
        target = target.replace(wrapped, token).replace(token, wrapped)
        bos_first = bool(context)
        context_ids = self._encode(context, add_special_tokens=True)
        target_ids = self._encode(target, add_special_tokens=not bos_first)
        if self.add_eos and self.tokenizer.eos_token_id is not None:
            target_ids = target_ids + [self.tokenizer.eos_token_id]
        input_ids = context_ids + target_ids
        if self.supervise == "all":
            labels = list(input_ids)
        else:
            labels = [-100] * len(context_ids) + list(target_ids)
            if not bos_first and target_ids and target_ids[0] == self.tokenizer.bos_token_id:
                labels[0] = -100
        labels = [-100 if token_id == self.image_token_id else label for token_id, label in zip(input_ids, labels)]
        if self.max_length is not None and len(input_ids) > self.max_length:
            positions = [i for i, token_id in enumerate(input_ids) if token_id == self.image_token_id]
            if positions and positions[-1] + 2 > self.max_length:  # keep the placeholder and its [/IMG]
                raise ValueError(
                    f"Row {index}: max_length={self.max_length} would cut an image placeholder (the last one sits at "
                    f"position {positions[-1]}); raise max_length."
                )
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        return input_ids, labels

    def _row_visual_ids(self, row: Mapping[str, Any], index: int) -> list[list[int]]:
        """The LLM ids of each pre-tokenized image of a row (codebook index + the processor's visual offset)."""
        codes = row[self.visual_token_ids_column]
        images = [codes] if len(codes) == 0 or not isinstance(codes[0], (list, tuple)) else list(codes)
        offset = self.processor._offset()
        codebook_size = getattr(self.processor, "codebook_size", None)
        visual_ids = []
        for image_codes in images:
            image_codes = [int(code) for code in image_codes]  # may be empty: LaVIT keeps no token of a blank image
            too_large = codebook_size is not None and image_codes and max(image_codes) >= codebook_size
            if image_codes and (min(image_codes) < 0 or too_large):
                raise ValueError(
                    f"Row {index}: column {self.visual_token_ids_column!r} holds codes outside "
                    f"[0, {codebook_size}): {min(image_codes)}..{max(image_codes)}."
                )
            visual_ids.append([offset + code for code in image_codes])
        return visual_ids

    def _expand_visual_ids(
        self, input_ids: list[int], labels: list[int], visual_ids: list[list[int]]
    ) -> tuple[list[int], list[int]]:
        """Put each image's visual ids in place of its placeholder (labelled with themselves under
        `supervise="all"`, for the model to use or ignore)."""
        expanded_ids: list[int] = []
        expanded_labels: list[int] = []
        images = iter(visual_ids)
        for token_id, label in zip(input_ids, labels):
            if token_id == self.image_token_id:
                ids = next(images)
                expanded_ids.extend(ids)
                expanded_labels.extend(ids if self.supervise == "all" else [-100] * len(ids))
            else:
                expanded_ids.append(token_id)
                expanded_labels.append(label)
        return expanded_ids, expanded_labels

    # -- the batch -----------------------------------------------------------------------------------------------------

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(rows) == 0:
            raise ValueError("The batch holds no row.")
        sequences: list[tuple[list[int], list[int]]] = []
        images: list[Any] = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"Row {index} of the batch must be a mapping of columns, got {type(row).__name__}.")
            if row.get("input_ids") is not None:  # pre-tokenized: visual ids already in the sequence
                input_ids = [int(token_id) for token_id in row["input_ids"]]
                if self.image_token_id in input_ids:
                    raise ValueError(
                        f"Row {index}: pre-tokenized input_ids hold an image placeholder; tokenize the images with "
                        "processor(..., vision_tokenizer=model.vision_tokenizer) first."
                    )
                labels = row.get("labels")
                labels = list(input_ids) if labels is None else [int(label) for label in labels]
                if len(labels) != len(input_ids):
                    raise ValueError(f"Row {index}: labels and input_ids differ in length.")
                sequences.append((input_ids, labels))
                continue
            if row.get(self.visual_token_ids_column) is not None:  # pre-tokenized images, text to lay out
                visual_ids = self._row_visual_ids(row, index)
                input_ids, labels = self._tokenize_row(row, index, len(visual_ids))
                sequences.append(self._expand_visual_ids(input_ids, labels, visual_ids))
                continue
            raw_images = self._row_images(row, index)
            try:
                loaded = [self._load(image) for image in raw_images]
            except (ValueError, TypeError, OSError) as error:
                if self.on_bad_image == "raise":
                    raise ValueError(f"Row {index} of the batch: could not load its image: {error}") from error
                self.num_skipped += 1
                logger.warning(f"Skipping row {index} of the batch: could not load its image ({error}).")
                continue
            sequences.append(self._tokenize_row(row, index, len(loaded)))
            images.extend(loaded)
        if not sequences:
            raise ValueError(f"Every row of the batch was skipped ({len(rows)} undecodable images).")
        return self._pad(sequences, images)

    def _pad(self, sequences: list[tuple[list[int], list[int]]], images: list[Any]) -> dict[str, torch.Tensor]:
        length = max(len(ids) for ids, _ in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(sequences), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, (ids, row_labels) in enumerate(sequences):  # right padding
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[row, : len(ids)] = torch.tensor(row_labels, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if images:
            batch["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return batch


__all__ = ["GVTDataCollator"]
