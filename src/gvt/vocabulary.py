"""The shared vocabulary of a LaVIT-style model: codebook indices <-> LLM token ids, and the one vectorised splice that
puts each image's dynamic-length tokens where its placeholder stands.

Imports only torch (no `gvt` imports), so it travels with the model and processor code into a Hub repo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GVTVocabulary:
    """Where the special and visual ids of one vocabulary live.

    Args:
        image_token_id: the image placeholder (`<image>`) that the model replaces with the image's own tokens.
        image_start_token_id, image_end_token_id: `[IMG]` and `[/IMG]`.
        visual_token_offset: LLM id of visual code 0 (code `c` is id `visual_token_offset + c`).
        codebook_size: number of visual codes.
    """

    image_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    visual_token_offset: int
    codebook_size: int

    @classmethod
    def from_config(cls, config) -> GVTVocabulary:
        """From a `GVTConfig`."""
        return cls(
            image_token_id=config.image_token_id,
            image_start_token_id=config.image_start_token_id,
            image_end_token_id=config.image_end_token_id,
            visual_token_offset=config.visual_token_offset,
            codebook_size=config.vision_config.codebook_size,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        codebook_size: int,
        image_token: str = "<image>",
        image_start_token: str = "[IMG]",
        image_end_token: str = "[/IMG]",
        visual_token_offset: int | None = None,
    ) -> GVTVocabulary:
        """From a text tokenizer that knows the three special tokens; visual ids start after its vocabulary unless
        `visual_token_offset` says otherwise."""
        ids = {}
        for token in (image_token, image_start_token, image_end_token):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"The tokenizer has no token {token!r}; add it as a special token first.")
            ids[token] = token_id
        return cls(
            image_token_id=ids[image_token],
            image_start_token_id=ids[image_start_token],
            image_end_token_id=ids[image_end_token],
            visual_token_offset=len(tokenizer) if visual_token_offset is None else visual_token_offset,
            codebook_size=codebook_size,
        )

    @property
    def visual_token_end(self) -> int:
        """One past the last visual id."""
        return self.visual_token_offset + self.codebook_size

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.long() + self.visual_token_offset

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.long() - self.visual_token_offset

    def is_visual(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.visual_token_offset) & (ids < self.visual_token_end)


@dataclass
class SplicedSequence:
    """Result of [`splice_image_tokens`].

    Args:
        input_ids, attention_mask (`[B, L']`): the expanded batch, padded on the same side as the input.
        labels (`[B, L']` or None): expanded labels; image positions carry the image's ids (mask them as needed).
        image_batch_index, image_position (`[M]`): where the M real image tokens went, in the order of
            `image_token_ids[image_attention_mask.bool()]` (image by image, left to right).
        position_ids (`[B, L']` or None): expanded position ids (when given): every text token keeps its position
            shifted by the extra slots of the images before it; the j-th token of an image whose placeholder had
            position p gets p + j (shifted alike); new padding gets 0.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    image_batch_index: torch.Tensor
    image_position: torch.Tensor
    position_ids: torch.Tensor | None = None


def splice_image_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    placeholder_mask: torch.Tensor,
    image_token_ids: torch.Tensor,
    image_attention_mask: torch.Tensor,
    pad_token_id: int,
    labels: torch.Tensor | None = None,
    left_padding: bool | None = None,
    ignore_index: int = -100,
    position_ids: torch.Tensor | None = None,
) -> SplicedSequence:
    """Replace the k-th placeholder of the batch (row-major order) by the real tokens of image k, in one vectorised
    scatter (no loop over images).

    Args:
        input_ids (`[B, T]`), attention_mask (`[B, T]` or None), labels (`[B, T]` or None), position_ids (`[B, T]`
            or None): the text batch.
        placeholder_mask (`[B, T]` bool): where the image placeholders are.
        image_token_ids (`[N, L]`): LLM ids of each image's tokens, right-padded; `image_attention_mask` marks the
            real ones (an image may have none).
        pad_token_id: id written at new padding positions (mask 0, label `ignore_index`).
        left_padding: align rows to the right (left padding, for generation) or to the left. Default: left unless some
            row of `attention_mask` ends in padding.
    """
    batch_size, length = input_ids.shape
    device = input_ids.device
    num_placeholders = int(placeholder_mask.sum())
    if num_placeholders != image_token_ids.shape[0]:
        raise ValueError(
            f"The text holds {num_placeholders} image placeholder(s) but {image_token_ids.shape[0]} image(s) were "
            "given; there must be exactly one placeholder per image."
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if left_padding is None:
        left_padding = bool(attention_mask[:, -1].all()) if length else True
    counts = image_attention_mask.long().sum(dim=1)

    # Each text token takes one slot, each placeholder as many as its image has tokens.
    spans = torch.ones_like(input_ids, dtype=torch.long)
    spans = spans.masked_scatter(placeholder_mask, counts)
    row_lengths = spans.sum(dim=1)
    new_length = int(row_lengths.max()) if batch_size else 0
    shift = (new_length - row_lengths) if left_padding else torch.zeros_like(row_lengths)
    starts = spans.cumsum(dim=1) - spans + shift[:, None]

    new_ids = torch.full((batch_size, new_length), pad_token_id, dtype=input_ids.dtype, device=device)
    new_mask = torch.zeros((batch_size, new_length), dtype=attention_mask.dtype, device=device)
    new_labels = new_positions = None
    if labels is not None:
        new_labels = torch.full((batch_size, new_length), ignore_index, dtype=labels.dtype, device=device)
    if position_ids is not None:
        new_positions = torch.zeros((batch_size, new_length), dtype=position_ids.dtype, device=device)
        # Each slot keeps the caller's position, shifted by the extra slots of the images before it.
        extra_before = (spans - 1).cumsum(dim=1) - (spans - 1)
        shifted = position_ids + extra_before.to(position_ids.dtype)

    rows = torch.arange(batch_size, device=device)[:, None].expand(batch_size, length)
    text = ~placeholder_mask
    text_rows, text_positions = rows[text], starts[text]
    new_ids[text_rows, text_positions] = input_ids[text]
    new_mask[text_rows, text_positions] = attention_mask[text]
    if labels is not None:
        new_labels[text_rows, text_positions] = labels[text]
    if position_ids is not None:
        new_positions[text_rows, text_positions] = shifted[text]

    image_rows = rows[placeholder_mask]  # [N]
    image_starts = starts[placeholder_mask]  # [N]
    real = image_attention_mask.bool()
    offsets = torch.arange(image_token_ids.shape[1], device=device)
    image_batch_index = image_rows[:, None].expand_as(image_token_ids)[real]
    image_position = (image_starts[:, None] + offsets)[real]
    values = image_token_ids[real].to(new_ids.dtype)
    new_ids[image_batch_index, image_position] = values
    new_mask[image_batch_index, image_position] = 1
    if labels is not None:
        new_labels[image_batch_index, image_position] = values.to(new_labels.dtype)
    if position_ids is not None:
        image_positions = shifted[placeholder_mask][:, None] + offsets.to(position_ids.dtype)
        new_positions[image_batch_index, image_position] = image_positions[real]
    return SplicedSequence(new_ids, new_mask, new_labels, image_batch_index, image_position, new_positions)


def image_placeholder_layout(placeholder_mask: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Which images are *collapsed* (one placeholder) in `placeholder_mask` `[B, T]`; the others are *expanded* (one
    placeholder per visual token). Returns a bool tensor `[N]` over the N images of `token_counts` `[N]`.

    The placeholders form runs (maximal stretches of consecutive placeholders in a row); in reading order, image k
    owns the k-th run, which holds either 1 placeholder (collapsed) or exactly `token_counts[k]` (expanded; an
    expanded image without tokens has no run at all). Both readings agree where an image has one token. Anything else
    raises a `ValueError` that names the images and counts.
    """
    counts = token_counts.long().to(placeholder_mask.device)
    num_images = counts.shape[0]
    previous = torch.zeros_like(placeholder_mask)
    previous[:, 1:] = placeholder_mask[:, :-1]
    run_starts = (placeholder_mask & ~previous).flatten()
    run_index = run_starts.long().cumsum(0) - 1
    num_runs = int(run_starts.sum())
    run_lengths = torch.bincount(run_index[placeholder_mask.flatten()], minlength=num_runs)
    if num_runs == num_images:
        collapsed = run_lengths == 1
        if bool((collapsed | (run_lengths == counts)).all()):
            return collapsed
    nonzero = counts[counts > 0]
    if num_runs == nonzero.shape[0] and bool((run_lengths == nonzero).all()):
        return torch.zeros(num_images, dtype=torch.bool, device=counts.device)
    raise ValueError(
        f"input_ids hold {int(placeholder_mask.sum())} image placeholder(s) in {num_runs} run(s) of lengths "
        f"{run_lengths.tolist()} for {num_images} image(s) with {counts.tolist()} visual token(s): each image needs "
        "either one placeholder (collapsed, as GVTProcessor writes it) or exactly as many consecutive placeholders as "
        "it has visual tokens (expanded, see LaVITForCausalLM.expand_image_tokens)."
    )


__all__ = ["GVTVocabulary", "SplicedSequence", "splice_image_tokens", "image_placeholder_layout"]
