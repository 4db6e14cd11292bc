"""Tiny random LaVIT repos: config, weights, processor (a small word-level text tokenizer built with `tokenizers`, and
the processor's own chat template), generation config; the analogue of the tiny random test repos of the
transformers ecosystem.

`gvt tiny-random OUT` writes one; tests and users' CI load it with `from_pretrained(OUT)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GenerationConfig, PreTrainedTokenizerFast

from .atomic_write import HF_WEIGHT_FILES, atomic_output_dir, check_output_dir
from .configuration_gvt import VISION_PRESETS, GVTConfig
from .image_processing_gvt import GVTImageProcessor
from .modeling_lavit import LaVITForCausalLM
from .processing_gvt import CHAT_TEMPLATE, GVTProcessor

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "[IMG]", "[/IMG]"]
# What an earlier tiny-random repo in the same folder holds that a new one supersedes (see `gvt.atomic_write`).
TINY_RANDOM_ENTRIES = (*HF_WEIGHT_FILES, "decoder")

_WORDS = (
    "a an the of in on at with and or is are was be this that it its there here what which how many much who where "
    "why when do does can you describe image picture photo scene shows show see seen contains contain object objects "
    "shape shapes color colors colour left right top bottom middle center above below next to behind front small "
    "large big tiny little one two three four five six seven eight nine ten zero none no yes some all each "
    "red green blue yellow orange purple pink black white gray grey brown circle square triangle star rectangle "
    "ellipse line dot cross heart diamond hexagon cat dog bird car tree house person man woman child sky water grass "
    "road table chair cup book ball boat plane train bus street city field mountain river beach snow sun cloud "
    "background foreground near far between count answer question caption USER ASSISTANT : , . ? ! '"
).split()


def build_tiny_text_tokenizer(vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly `vocab_size` entries: the special tokens, a few hundred caption words, then
    filler words. Left padding (for generation)."""
    words = list(dict.fromkeys(_WORDS))
    vocab_words = SPECIAL_TOKENS + words
    if len(vocab_words) > vocab_size:
        raise ValueError(f"vocab_size must be at least {len(vocab_words)}, got {vocab_size}.")
    vocab_words += [f"w{index}" for index in range(vocab_size - len(vocab_words))]
    vocab = {word: index for index, word in enumerate(vocab_words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[4:]})
    return tokenizer


def build_tiny_random(
    image_input_mode: str = "ids", seed: int = 0, **config_overrides
) -> tuple[LaVITForCausalLM, GVTProcessor]:
    """A tiny random [`LaVITForCausalLM`] (tiny vision preset, 2-layer Llama of width 48) and its processor.

    Its feature decoders reconstruct the encoder's features (`decoder_output_dim = hidden_size`), so every mode can
    train its tokenizer (`gvt train tokenizer`) and `"codebook"` mode can run ETT. `config_overrides` (e.g.
    `vision_config={...}`) go to [`GVTConfig.from_preset`]."""
    tokenizer = build_tiny_text_tokenizer()
    vision_overrides = dict(config_overrides.pop("vision_config", {}))
    vision_overrides.setdefault("decoder_output_dim", VISION_PRESETS["tiny"]["hidden_size"])
    config = GVTConfig.from_preset(
        "tiny",
        vision_config=vision_overrides,
        image_input_mode=image_input_mode,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_start_token_id=tokenizer.convert_tokens_to_ids("[IMG]"),
        image_end_token_id=tokenizer.convert_tokens_to_ids("[/IMG]"),
        visual_token_offset=len(tokenizer),
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = LaVITForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=16,
        do_sample=False,
    )
    image_size = config.vision_config.image_size
    image_processor = GVTImageProcessor(size={"height": image_size, "width": image_size})
    processor = GVTProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        visual_token_offset=config.visual_token_offset,
        codebook_size=config.vision_config.codebook_size,
    )
    return model, processor


def save_tiny_random(
    out_dir: str | os.PathLike,
    image_input_mode: str = "ids",
    seed: int = 0,
    overwrite: bool = False,
    with_decoder: bool = True,
) -> Path:
    """Write a complete tiny random repo to `out_dir` through [`gvt.atomic_write.atomic_output_dir`] (staged beside
    it, then renamed into place; a non-empty `out_dir` is refused unless `overwrite`, other files in it are kept).

    Also writes `OUT/decoder` (the diffusers decoder pipeline) when `with_decoder`.
    """
    check_output_dir(out_dir, overwrite, owns=TINY_RANDOM_ENTRIES)
    model, processor = build_tiny_random(image_input_mode=image_input_mode, seed=seed)
    with atomic_output_dir(out_dir, overwrite, owns=TINY_RANDOM_ENTRIES) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if with_decoder:
            from .pipeline_lavit_decoder import build_tiny_decoder_pipeline

            build_tiny_decoder_pipeline(model.vision_tokenizer).save_pretrained(staging / "decoder")
    return Path(out_dir)


__all__ = ["build_tiny_text_tokenizer", "build_tiny_random", "save_tiny_random", "CHAT_TEMPLATE", "SPECIAL_TOKENS"]
