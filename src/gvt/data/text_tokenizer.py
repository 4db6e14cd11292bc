"""A small lowercase BPE text vocabulary trained with `tokenizers`, wrapped as a `PreTrainedTokenizerFast`."""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

DEFAULT_TEXT_VOCAB_SIZE = 512
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "[IMG]", "[/IMG]")
"""Special tokens, in id order (so `<pad>` is 0)."""
BASE_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation
"""Always in the vocabulary, so any lowercase ASCII text encodes without `<unk>`."""
WORD_BOUNDARY = "\u2581"
"""Metaspace's word-start marker ("▁"), as in sentencepiece."""


def train_text_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_TEXT_VOCAB_SIZE,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    *,
    pad_token: str = "<pad>",
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    add_bos_token: bool = True,
    min_frequency: int = 1,
) -> PreTrainedTokenizerFast:
    """Train a deterministic lowercase BPE vocabulary on `texts` (e.g. `gvt.data.scene_texts(dataset)`).

    `special_tokens` get the first ids, in order; `pad_token`, `bos_token`, `eos_token` and `unk_token` must be
    among them, and the others (by default `<image>`, `[IMG]`, `[/IMG]`) become `extra_special_tokens`. Text is
    NFKC + lowercase normalised, split on whitespace (Metaspace), punctuation and single digits, so `decode(encode(t))` gives `t.lower()`
    back for ASCII text with single spaces. With `add_bos_token`, every sequence starts with `bos_token`.
    """
    special_tokens = list(special_tokens)
    roles = {"pad_token": pad_token, "bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token}
    missing = {role: token for role, token in roles.items() if token not in special_tokens}
    if missing:
        raise ValueError(f"{missing} must be listed in special_tokens={special_tokens}.")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has duplicates: {special_tokens}.")
    minimum_size = len(special_tokens) + len(BASE_ALPHABET) + 1
    if vocab_size < minimum_size:
        raise ValueError(f"vocab_size must be at least {minimum_size} (special tokens + alphabet), got {vocab_size}.")

    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always"),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=list(BASE_ALPHABET + WORD_BOUNDARY),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if add_bos_token:
        bos_id = tokenizer.token_to_id(bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, bos_id)]
        )
    extra_special_tokens = [token for token in special_tokens if token not in roles.values()]
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens=extra_special_tokens, **roles)
