"""Tiny random LaVIT repos: config, weights, processor (a small word-level text tokenizer built with `tokenizers`, and
the processor's own chat template), generation config; the analogue of the tiny random test repos of the
transformers ecosystem.

`gvt tiny-random OUT` writes one; tests and users' CI load it with `from_pretrained(OUT)`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GenerationConfig, PreTrainedTokenizerFast

from .configuration_gvt import GVTConfig
from .image_processing_gvt import GVTImageProcessor
from .modeling_lavit import LaVITForCausalLM
from .processing_gvt import CHAT_TEMPLATE, GVTProcessor

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "[IMG]", "[/IMG]"]

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
    """A tiny random [`LaVITForCausalLM`] (tiny vision preset, 2-layer Llama of width 48) and its processor."""
    tokenizer = build_tiny_text_tokenizer()
    config = GVTConfig.from_preset(
        "tiny",
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
    """Write a complete tiny random repo to `out_dir` (written to a temporary folder, then renamed into place).

    Also writes `OUT/decoder` (the diffusers decoder pipeline) when `gvt.pipeline_lavit_decoder` provides
    `build_tiny_decoder_pipeline`.
    """
    target = Path(out_dir)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    model, processor = build_tiny_random(image_input_mode=image_input_mode, seed=seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if with_decoder:
            try:
                from .pipeline_lavit_decoder import build_tiny_decoder_pipeline
            except ImportError:
                build_tiny_decoder_pipeline = None
            if build_tiny_decoder_pipeline is not None:
                build_tiny_decoder_pipeline(model.vision_tokenizer).save_pretrained(staging / "decoder")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


__all__ = ["build_tiny_text_tokenizer", "build_tiny_random", "save_tiny_random", "CHAT_TEMPLATE", "SPECIAL_TOKENS"]
