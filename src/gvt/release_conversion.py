"""Full-release conversion: a local LaVIT-7B-v2 (or GVT + Vicuna/Llama) release -> one Hub-ready `GVTConfig` repo.

What a converted repo holds: `config.json` ([`GVTConfig`] with `auto_map` and the remote code), sharded
`model-XXXXX-of-YYYYY.safetensors` + `model.safetensors.index.json`, the processor (image processor + the Llama
tokenizer extended with `[IMG]`, `[/IMG]`, one added token per visual code and the `<image>` placeholder),
`generation_config.json` (the reference's captioning defaults), `image_generation_config.json` (its text-to-image
sampling defaults), the diffusers decoder pipeline(s) in `decoder/` (highres) and `decoder_lowres/`, a `README.md`
model card, and `conversion_provenance.json`.

Streaming: the language model is read one shard at a time (`.bin` through `torch.load(mmap=True, weights_only=True)`,
`.safetensors` tensor by tensor), renamed to the target layout (`language_model.` + the Hugging Face Llama key; the
target keys and shapes come from `LaVITForCausalLM(config)` built on the meta device, never materialised), cast, and
written to output shards incrementally; an output shard is closed at `max_shard_size` and at every input-shard
boundary, so peak memory stays near the largest input shard. Every source key must be consumed and every target key
produced, or a `ValueError` names the offenders. Everything is written to a temporary sibling folder and renamed into
place at the end: a failed conversion leaves nothing behind.

Vocabulary: the released embedding has `R` rows = text + `[IMG]` + `[/IMG]` + codebook (32000 + 2 + 16384 = 48386);
ids stay exactly where the release put them (`[IMG]` = R - C - 2, `[/IMG]` = R - C - 1, code c -> R - C + c), and one
row is appended for the processor's `<image>` placeholder (id R), initialised to the mean of the existing rows (it is
always replaced by the image's tokens, so it is never read; the LM head's new row is banned while generating).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic_write import HF_WEIGHT_FILES, atomic_output_dir, check_output_dir
from .configuration_gvt import GVTConfig, GVTVisionConfig
from .conversion import (
    build_tokenizer,
    check_num_heads,
    convert_gvt_tokenizer,
    load_lavit_release,
    load_state_dict_file,
)
from .weight_files import checkpoint_read_errors

LANGUAGE_MODEL_DIR = "language_model"
DECODER_SUBFOLDERS = {"highres": "decoder", "lowres": "decoder_lowres"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Derived buffers that older Llama checkpoints carry (recomputed from the config, never weights).
IGNORED_LLM_KEYS = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
VISUAL_TOKEN_TEMPLATE = "<visual_{}>"
# What an earlier conversion in the same folder may hold that a new one supersedes even where it writes no file of that
# name (other shards, a decoder folder skipped with --no-decoders, the image-generation defaults of a LaVIT repo).
CONVERTED_REPO_ENTRIES = (*HF_WEIGHT_FILES, "decoder", "decoder_lowres", "image_generation_config.json")

# The reference's defaults (LaVIT `lavit_for_understanding.generate` / `predict_answers`, `generate_image`).
CAPTION_GENERATION_DEFAULTS: dict[str, Any] = {"num_beams": 2, "max_new_tokens": 36, "min_new_tokens": 8}
VQA_GENERATION_DEFAULTS: dict[str, Any] = {
    "num_beams": 5,
    "max_new_tokens": 10,
    "min_new_tokens": 2,
    "length_penalty": 0.0,
}
VQA_PROMPT = "Question: {} Answer:"
# `num_beams=1` overrides the captioning beams of generation_config.json, which `generate_images` would inherit.
IMAGE_GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 0.9,
    "guidance_scale": 4.0,
    "num_beams": 1,
}
DECODER_DEFAULTS: dict[str, Any] = {"num_inference_steps": 25, "guidance_scale": 7.0}

StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------
# Sizes and files
# ----------------------------------------------------------------------------------------------------------------


def parse_size(size: int | str) -> int:
    """`"2GB"`, `"500MB"`, `"64KiB"` or a byte count -> bytes."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"A size must be a byte count or a string such as '2GB', got {size!r}.")
    if isinstance(size, int):
        number = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"Cannot parse the size {size!r}; use e.g. '2GB', '500MB' or a byte count.")
        value, unit, binary = float(match.group(1)), match.group(2).upper(), match.group(3)
        number = int(value * (1024 if binary else 1000) ** " KMGT".index(unit or " "))
    if number < 1:
        raise ValueError(f"A shard size must be at least 1 byte, got {size!r}.")
    return number


def find_language_model_shards(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a Hugging Face model folder, in index order (`.safetensors` preferred over `.bin`)."""
    directory = Path(directory)
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            absent = [str(path) for path in files if not path.is_file()]
            if absent:
                raise FileNotFoundError(f"{index} lists shards that do not exist: {absent}")
            return files
        if (directory / single).is_file():
            return [directory / single]
    raise FileNotFoundError(
        f"No language model weights in {directory} (expected model.safetensors[.index.json] or "
        "pytorch_model.bin[.index.json])."
    )


def indexed_keys(directory: str | os.PathLike) -> list[str] | None:
    """The tensor names listed by a shard index, if the folder has one (to check keys before reading any tensor)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = Path(directory) / index_name
        if index.is_file():
            return list(json.loads(index.read_text())["weight_map"])
    return None


def iter_checkpoint_tensors(path: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(key, tensor)` of one checkpoint file without holding a second copy: `.safetensors` tensor by tensor,
    pickles memory-mapped (`weights_only=True`; falls back to a plain load for files that cannot be mapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with checkpoint_read_errors(path):
            opened = safe_open(str(path), framework="pt", device="cpu")
        with opened as handle:
            for key in handle.keys():
                with checkpoint_read_errors(path):
                    tensor = handle.get_tensor(key)
                yield key, tensor
        return
    with checkpoint_read_errors(path):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors.")
    keys = list(state)
    for key in keys:
        yield key, state.pop(key)
    del state


_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


_CAST_CHUNK_BYTES = 16 * 2**20


def _write_tensor_bytes(handle, tensor: torch.Tensor) -> None:
    """Write a tensor's raw little-endian bytes without an intermediate `bytes` copy."""
    if tensor.numel():
        handle.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))


def mean_row(tensor: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Mean over dim 0, accumulated in float32 chunk by chunk (no full float32 copy of a half-precision tensor)."""
    total = torch.zeros(tensor.shape[1:], dtype=torch.float32)
    for chunk in tensor.split(chunk_rows):
        total += chunk.float().sum(dim=0)
    return (total / max(tensor.shape[0], 1)).to(tensor.dtype)


class ShardedSafetensorsWriter:
    """Writes tensors to `model-XXXXX-of-YYYYY.safetensors` shards of at most `max_shard_size` bytes (a single tensor
    larger than that gets a shard of its own) plus `model.safetensors.index.json`; one shard -> `model.safetensors`.

    `add` only records a tensor (a memory-mapped view costs nothing); `flush()` writes the pending shard: the header
    is computed from shapes and the target dtype, then each tensor is cast, written straight from its buffer and
    dropped, so at most one converted tensor exists at a time. Rows appended to a vocabulary matrix
    (`extra_rows`) are written after the source rows, without concatenating. The converter flushes at every input-shard
    boundary, so no input shard stays referenced."""

    def __init__(
        self, directory: str | os.PathLike, max_shard_size: int | str = "2GB", dtype: torch.dtype | None = None
    ):
        self.directory = Path(directory)
        self.max_shard_size = parse_size(max_shard_size)
        self.dtype = dtype
        self._pending: list[tuple[str, torch.Tensor, int]] = []
        self._pending_bytes = 0
        self._files: list[tuple[Path, list[str]]] = []
        self.total_size = 0
        self.keys: set[str] = set()

    def _target_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        return self.dtype if self.dtype is not None and tensor.is_floating_point() else tensor.dtype

    def add(self, key: str, tensor: torch.Tensor, extra_rows: int = 0) -> None:
        """Record `tensor` under `key`, with `extra_rows` mean rows appended along dim 0."""
        if key in self.keys:
            raise ValueError(f"The tensor {key!r} was produced twice.")
        dtype = self._target_dtype(tensor)
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"Cannot write {key!r} of dtype {dtype} to safetensors.")
        rows = tensor.shape[0] + extra_rows if tensor.ndim else 1
        size = rows * (tensor[0].numel() if tensor.ndim else 1) * torch.empty((), dtype=dtype).element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_size:
            self.flush()
        self._pending.append((key, tensor, extra_rows))
        self._pending_bytes += size
        self.total_size += size
        self.keys.add(key)

    def flush(self) -> None:
        if not self._pending:
            return
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, tensor, extra_rows in self._pending:
            dtype = self._target_dtype(tensor)
            shape = [tensor.shape[0] + extra_rows, *tensor.shape[1:]] if tensor.ndim else []
            size = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
            header[key] = {
                "dtype": _SAFETENSORS_DTYPES[dtype],
                "shape": shape,
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        path = self.directory / f".shard-{len(self._files):05d}.safetensors"
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        with open(path, "wb") as handle:
            handle.write(len(encoded).to_bytes(8, "little"))
            handle.write(encoded)
            while pending:
                key, tensor, extra_rows = pending.pop(0)
                dtype = self._target_dtype(tensor)
                if tensor.ndim and tensor.dtype != dtype:  # cast in chunks of rows: no full-size converted copy
                    row_bytes = max(tensor[0].numel() * tensor.element_size(), 1)
                    for chunk in tensor.split(max(1, _CAST_CHUNK_BYTES // row_bytes)):
                        _write_tensor_bytes(handle, chunk.to(dtype))
                else:
                    _write_tensor_bytes(handle, tensor.to(dtype))
                if extra_rows:
                    row = mean_row(tensor).to(dtype)
                    _write_tensor_bytes(handle, row.unsqueeze(0).expand(extra_rows, *row.shape))
                del tensor
        self._files.append((path, [key for key in header if key != "__metadata__"]))

    def finish(self) -> list[Path]:
        """Close the last shard, give the shards their final names and write the index; return the shard paths."""
        self.flush()
        if len(self._files) == 1:
            final = self.directory / "model.safetensors"
            os.replace(self._files[0][0], final)
            return [final]
        count = len(self._files)
        weight_map, finals = {}, []
        for number, (path, keys) in enumerate(self._files, start=1):
            final = self.directory / f"model-{number:05d}-of-{count:05d}.safetensors"
            os.replace(path, final)
            finals.append(final)
            weight_map.update(dict.fromkeys(keys, final.name))
        index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return finals


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VocabularyLayout:
    """Where every id of the converted model lives. `source_rows` embedding rows come from the release;
    `vocab_size - source_rows` rows are appended (mean-initialised)."""

    text_vocab_size: int
    source_rows: int
    vocab_size: int
    image_token_id: int
    image_start_token_id: int
    image_end_token_id: int
    visual_token_offset: int
    codebook_size: int

    @property
    def new_rows(self) -> int:
        return self.vocab_size - self.source_rows


def load_text_tokenizer(directory: str | os.PathLike):
    """The language model's tokenizer (a `tokenizer.json`, or a sentencepiece `tokenizer.model`, which needs the
    `conversion` extra: `pip install sentencepiece protobuf`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (ImportError, ValueError, OSError) as error:
        raise ValueError(
            f"Cannot load the tokenizer of {directory}: {error}. A sentencepiece `tokenizer.model` needs "
            "`pip install sentencepiece protobuf` (the `conversion` extra of gvt)."
        ) from error


def _add_special(tokenizer, tokens: list[str]) -> None:
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def extend_lavit_tokenizer(
    tokenizer,
    source_rows: int,
    codebook_size: int,
    image_token: str = "<image>",
    image_start_token: str = "[IMG]",
    image_end_token: str = "[/IMG]",
) -> VocabularyLayout:
    """Extend the release's Llama tokenizer in place so that its ids match the released embedding rows: `[IMG]`,
    `[/IMG]` right after the text vocabulary (unless the tokenizer knows them already), one added special token per
    visual code from `source_rows - codebook_size` on, then `<image>` at `source_rows`."""
    text_size = len(tokenizer)
    offset = source_rows - codebook_size
    vocab = tokenizer.get_vocab()
    missing = [t for t in (image_start_token, image_end_token) if t not in vocab]
    _add_special(tokenizer, missing)
    start, end = (tokenizer.convert_tokens_to_ids(t) for t in (image_start_token, image_end_token))
    if len(tokenizer) != offset or not (start < offset and end < offset):
        raise ValueError(
            f"The release's embedding has {source_rows} rows and the codebook {codebook_size} codes, so visual ids "
            f"start at {offset}; but the tokenizer has {text_size} tokens ({len(tokenizer)} with {image_start_token} "
            f"and {image_end_token} at {start}, {end}). Is this the language model of the same release?"
        )
    _add_special(tokenizer, [VISUAL_TOKEN_TEMPLATE.format(code) for code in range(codebook_size)])
    if image_token in tokenizer.get_vocab():
        raise ValueError(f"The release's tokenizer already holds {image_token!r}; pick another placeholder.")
    _add_special(tokenizer, [image_token])
    _finish_tokenizer(tokenizer, image_token, image_start_token, image_end_token)
    return VocabularyLayout(
        text_vocab_size=text_size,
        source_rows=source_rows,
        vocab_size=source_rows + 1,
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        image_start_token_id=start,
        image_end_token_id=end,
        visual_token_offset=offset,
        codebook_size=codebook_size,
    )


def extend_gvt_tokenizer(
    tokenizer,
    source_rows: int,
    image_token: str = "<image>",
    image_start_token: str = "[IMG]",
    image_end_token: str = "[/IMG]",
) -> VocabularyLayout:
    """GVT has no image tokens in its vocabulary: append `<image>`, `[IMG]`, `[/IMG]` after the `source_rows` rows."""
    text_size = len(tokenizer)
    if text_size > source_rows:
        raise ValueError(f"The tokenizer has {text_size} tokens but the language model only {source_rows} rows.")
    filler = [f"<unused_{index}>" for index in range(source_rows - text_size)]  # rows the tokenizer does not name
    _add_special(tokenizer, filler)
    present = [t for t in (image_token, image_start_token, image_end_token) if t in tokenizer.get_vocab()]
    if present:
        raise ValueError(f"The tokenizer already holds {present}; pick other image tokens.")
    _add_special(tokenizer, [image_token, image_start_token, image_end_token])
    _finish_tokenizer(tokenizer, image_token, image_start_token, image_end_token)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (image_token, image_start_token, image_end_token)]
    return VocabularyLayout(
        text_vocab_size=text_size,
        source_rows=source_rows,
        vocab_size=source_rows + 3,
        image_token_id=ids[0],
        image_start_token_id=ids[1],
        image_end_token_id=ids[2],
        visual_token_offset=source_rows + 3,
        codebook_size=0,
    )


def _finish_tokenizer(tokenizer, *special_tokens: str) -> None:
    """Left padding (for generation); pad with `<unk>` (LaVIT's Llama has no pad token) or else `</s>`."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = "left"


def extend_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append `rows` rows equal to the mean of the existing rows (computed in float32): deterministic, and on the
    scale of the trained rows."""
    if rows == 0:
        return tensor
    return torch.cat((tensor, mean_row(tensor).unsqueeze(0).expand(rows, *tensor.shape[1:])), dim=0)


# ----------------------------------------------------------------------------------------------------------------
# The language model, streamed
# ----------------------------------------------------------------------------------------------------------------


def expected_state_dict_shapes(config: GVTConfig) -> dict[str, torch.Size]:
    """Keys and shapes of `LaVITForCausalLM(config)`, built on the meta device (no memory)."""
    from .modeling_lavit import LaVITForCausalLM

    with torch.device("meta"):
        model = LaVITForCausalLM(config)
    return {key: value.shape for key, value in model.state_dict().items()}


def _language_model_target(key: str) -> str:
    return "language_model." + key


def check_language_model_keys(keys: list[str], expected: Mapping[str, torch.Size], source: str) -> None:
    """Raise naming the source keys that have no place in the target model."""
    unexpected = sorted(
        k for k in keys if not IGNORED_LLM_KEYS.search(k) and _language_model_target(k) not in expected
    )
    if unexpected:
        raise ValueError(f"Unexpected keys in the language model checkpoint ({source}): {unexpected}")


def stream_language_model(
    shards: list[Path],
    expected: Mapping[str, torch.Size],
    writer: ShardedSafetensorsWriter,
    embedding_keys: tuple[str, ...],
) -> list[str]:
    """Rename, extend (vocabulary rows of `embedding_keys`) and write every tensor of the language model shards, one
    shard at a time. Returns the target keys written."""
    written = []
    for shard in shards:
        for key, tensor in iter_checkpoint_tensors(shard):
            if IGNORED_LLM_KEYS.search(key):
                continue
            target = _language_model_target(key)
            if target not in expected:
                check_language_model_keys([key], expected, shard.name)
            shape = tuple(expected[target])
            extra_rows = 0
            if tuple(tensor.shape) != shape:
                if target in embedding_keys and tensor.shape[1:] == shape[1:] and tensor.shape[0] < shape[0]:
                    extra_rows = shape[0] - tensor.shape[0]  # appended by the writer, no concatenated copy
                else:
                    raise ValueError(
                        f"Shape mismatch for {key!r} in {shard.name}: {tuple(tensor.shape)} in the checkpoint, "
                        f"{shape} expected."
                    )
            writer.add(target, tensor, extra_rows=extra_rows)
            written.append(target)
            del tensor
        writer.flush()  # release every reference into this shard before opening the next
    return written


def check_complete(expected: Mapping[str, torch.Size], produced: set[str]) -> None:
    missing = sorted(set(expected) - produced)
    if missing:
        raise ValueError(f"The release lacks tensors of the converted model: missing keys: {missing}")


# ----------------------------------------------------------------------------------------------------------------
# Repo pieces
# ----------------------------------------------------------------------------------------------------------------


def write_config_and_code(config: GVTConfig, directory: Path) -> None:
    """`config.json` with `auto_map` / `custom_pipelines`, and the code files a `trust_remote_code=True` load needs:
    what `LaVITForCausalLM.save_pretrained` writes, without instantiating the model."""
    from transformers.dynamic_module_utils import custom_object_save

    from . import modeling_lavit
    from .modeling_lavit import LaVITForCausalLM

    with torch.device("meta"):
        model = LaVITForCausalLM(config)
    custom_object_save(model, directory, config=config)
    auto_map = dict(getattr(config, "auto_map", None) or {})
    auto_map["AutoConfig"] = "configuration_gvt.GVTConfig"
    for auto_class in modeling_lavit.AUTO_CLASSES:
        auto_map[auto_class] = "modeling_lavit.LaVITForCausalLM"
    config.auto_map = auto_map
    pipeline_file = Path(modeling_lavit.__file__).with_name("pipeline_image_to_text.py")
    if pipeline_file.is_file():
        config.custom_pipelines = {
            "image-to-text": {
                "impl": "pipeline_image_to_text.GVTImageToTextPipeline",
                "pt": ["AutoModelForImageTextToText"],
                "tf": [],
                "type": "multimodal",
            }
        }
        shutil.copy(pipeline_file, directory / pipeline_file.name)
    config.save_pretrained(directory)


def build_processor(tokenizer, layout: VocabularyLayout, vision_config: GVTVisionConfig, chat_template=None):
    from .image_processing_gvt import GVTImageProcessor
    from .processing_gvt import GVTProcessor

    size = vision_config.image_size
    return GVTProcessor(
        image_processor=GVTImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        chat_template=chat_template,
        visual_token_offset=layout.visual_token_offset,
        codebook_size=layout.codebook_size if layout.codebook_size else None,
    )


def write_generation_configs(directory: Path, tokenizer, layout: VocabularyLayout, discrete: bool) -> None:
    from transformers import GenerationConfig

    common = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    GenerationConfig(**common, **CAPTION_GENERATION_DEFAULTS).save_pretrained(directory)
    if discrete:
        image = GenerationConfig(**{**common, "eos_token_id": layout.image_end_token_id}, **IMAGE_GENERATION_DEFAULTS)
        image.save_pretrained(directory, config_file_name="image_generation_config.json")


def _cast_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or None: keep the release's), got {dtype!r}.")
    return DTYPES[dtype]


@dataclass
class ConversionSummary:
    """What a conversion wrote (also saved as `conversion_provenance.json`)."""

    kind: str
    source: str
    image_input_mode: str
    dtype: str
    num_parameters: int
    num_tensors: int
    shards: list[str]
    vocabulary: dict[str, int]
    decoders: list[str] = field(default_factory=list)
    understanding: bool = False
    gvt_version: str = ""
    ignored_keys: list[str] = field(default_factory=list)


def _language_model_config(directory: Path, vocab_size: int, pad_token_id: int | None) -> dict:
    from transformers import AutoConfig

    text_config = AutoConfig.from_pretrained(str(directory)).to_dict()
    text_config["vocab_size"] = vocab_size
    text_config["pad_token_id"] = pad_token_id
    for key in ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "auto_map"):
        text_config.pop(key, None)
    return text_config


def _source_embedding_rows(directory: Path, shards: list[Path]) -> int:
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(str(directory)).vocab_size)


def _write_rest(
    staging: Path,
    config: GVTConfig,
    tokenizer,
    layout: VocabularyLayout,
    summary: ConversionSummary,
    card_kwargs: dict | None,
) -> None:
    write_config_and_code(config, staging)
    processor = build_processor(tokenizer, layout, config.vision_config)
    processor.save_pretrained(staging)
    write_generation_configs(staging, tokenizer, layout, discrete=config.vision_config.is_discrete)
    (staging / "conversion_provenance.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    if card_kwargs is not None:
        from .model_cards import build_model_card

        build_model_card(summary=summary, **card_kwargs).save(staging / "README.md")


# ----------------------------------------------------------------------------------------------------------------
# LaVIT
# ----------------------------------------------------------------------------------------------------------------


def convert_lavit_release(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    understanding: bool = False,
    num_heads: int = 16,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = "2GB",
    decoders: bool = True,
    model_card: dict | None = None,
    overwrite: bool = False,
) -> ConversionSummary:
    """Convert a local LaVIT release folder into one repo at `output_dir` (see the module docstring).

    `understanding=True` applies `language_model/visual_weight` and feeds the LLM the continuous features
    (`image_input_mode="features"`, the release's understanding model); otherwise the LLM reads visual ids (`"ids"`,
    the release's generation model). `dtype` (`"fp32"`, `"fp16"`, `"bf16"`; default: keep the release's) applies to
    every weight. `model_card`: keyword arguments of [`gvt.model_cards.build_model_card`] (`None`: no card).
    `output_dir` must be absent or empty unless `overwrite` (see [`gvt.atomic_write.atomic_output_dir`]: the old
    conversion is replaced, other files in the folder are kept), and must not overlap `input_dir`.
    """
    from . import __version__

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    torch_dtype = _cast_dtype(dtype)
    check_num_heads(num_heads)
    parse_size(max_shard_size)
    check_output_dir(output_dir, overwrite, inputs=[input_dir], owns=CONVERTED_REPO_ENTRIES)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"No LaVIT release folder at {input_dir}.")
    llm_dir = input_dir / LANGUAGE_MODEL_DIR
    if not llm_dir.is_dir():
        raise FileNotFoundError(f"{input_dir} has no {LANGUAGE_MODEL_DIR}/ folder; is it a LaVIT release?")
    shards = find_language_model_shards(llm_dir)

    # 1. The visual tokenizer (checks all its keys) and the vocabulary, before any heavy work.
    vision_config, vision_state_dict = load_lavit_release(
        input_dir, understanding=understanding, num_heads=num_heads, decoders=True
    )
    tokenizer = load_text_tokenizer(llm_dir)
    layout = extend_lavit_tokenizer(tokenizer, _source_embedding_rows(llm_dir, shards), vision_config.codebook_size)
    config = GVTConfig(
        vision_config=vision_config,
        text_config=_language_model_config(llm_dir, layout.vocab_size, tokenizer.pad_token_id),
        image_token_id=layout.image_token_id,
        image_start_token_id=layout.image_start_token_id,
        image_end_token_id=layout.image_end_token_id,
        visual_token_offset=layout.visual_token_offset,
        image_input_mode="features" if understanding else "ids",
    )
    expected = expected_state_dict_shapes(config)
    listed = indexed_keys(llm_dir)
    if listed is not None:
        check_language_model_keys(listed, expected, "index")

    with atomic_output_dir(output_dir, overwrite, inputs=[input_dir], owns=CONVERTED_REPO_ENTRIES) as staging:
        writer = ShardedSafetensorsWriter(staging, max_shard_size, torch_dtype)
        for key, tensor in vision_state_dict.items():
            target = "vision_tokenizer." + key
            if target not in expected:
                raise ValueError(f"The converted vision tokenizer has a key the model lacks: {target}")
            writer.add(target, tensor)
        writer.flush()
        vision_tokenizer = build_tokenizer(vision_config, vision_state_dict)
        del vision_state_dict
        embedding_keys = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")
        stream_language_model(shards, expected, writer, embedding_keys)
        check_complete(expected, writer.keys)
        written = writer.finish()

        decoder_types = []
        if decoders:
            decoder_types = _write_decoders(input_dir, vision_tokenizer, staging, torch_dtype)
        summary = ConversionSummary(
            kind="lavit",
            source=str(input_dir.name),
            image_input_mode=config.image_input_mode,
            dtype=str(torch_dtype or "as released").replace("torch.", ""),
            num_parameters=sum(int(torch.Size(s).numel()) for s in expected.values()),
            num_tensors=len(writer.keys),
            shards=[path.name for path in written],
            vocabulary=asdict(layout),
            decoders=decoder_types,
            understanding=understanding,
            gvt_version=__version__,
            ignored_keys=["EVA head.* / norm.* (unused by the tokenizer)", "rotary_emb.inv_freq (derived)"],
        )
        _write_rest(staging, config, tokenizer, layout, summary, model_card)
    return summary


def _write_decoders(input_dir: Path, vision_tokenizer, staging: Path, dtype: torch.dtype | None) -> list[str]:
    """Assemble the release's diffusion folders around the converted codebook and feature decoders and save them as
    `decoder/` (highres) and `decoder_lowres/`, without the vision tokenizer (it lives in the main repo: pass
    `vision_tokenizer=model.vision_tokenizer` to `from_pretrained` for reconstruction)."""
    from .pipeline_lavit_decoder import RELEASE_FOLDERS, assemble_release_pipeline

    written = []
    for decoder_type in vision_tokenizer.config.decoder_types:
        if not (input_dir / RELEASE_FOLDERS[decoder_type]).is_dir():
            continue
        pipeline = assemble_release_pipeline(input_dir, vision_tokenizer, decoder_type, dtype=dtype)
        pipeline.vision_tokenizer = None
        pipeline.save_pretrained(staging / DECODER_SUBFOLDERS[decoder_type])
        written.append(decoder_type)
        del pipeline
    return written


# ----------------------------------------------------------------------------------------------------------------
# GVT
# ----------------------------------------------------------------------------------------------------------------


def convert_gvt_release(
    checkpoint: str | os.PathLike,
    language_model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    num_heads: int = 16,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = "2GB",
    model_card: dict | None = None,
    overwrite: bool = False,
) -> ConversionSummary:
    """A GVT checkpoint (EVA-02 encoder + perceiver resampler + `llm_proj`) and its Vicuna/Llama folder -> one
    `GVTConfig` repo in `"features"` mode (the resampler's 32 latents go to the LLM through the projection).

    GVT has no image delimiters; the converted repo adds `<image>`, `[IMG]`, `[/IMG]` after the text vocabulary
    (mean-initialised rows), because the processor lays images out as `[IMG] <image> [/IMG]`. `output_dir`: as in
    [`convert_lavit_release`]."""
    from . import __version__

    checkpoint, llm_dir, output_dir = Path(checkpoint), Path(language_model_dir), Path(output_dir)
    torch_dtype = _cast_dtype(dtype)
    check_num_heads(num_heads)
    parse_size(max_shard_size)
    check_output_dir(output_dir, overwrite, inputs=[checkpoint, llm_dir], owns=CONVERTED_REPO_ENTRIES)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"No GVT checkpoint file at {checkpoint}.")
    shards = find_language_model_shards(llm_dir)
    vision_config, vision_state_dict = convert_gvt_tokenizer(load_state_dict_file(checkpoint), num_heads=num_heads)
    tokenizer = load_text_tokenizer(llm_dir)
    layout = extend_gvt_tokenizer(tokenizer, _source_embedding_rows(llm_dir, shards))
    config = GVTConfig(
        vision_config=vision_config,
        text_config=_language_model_config(llm_dir, layout.vocab_size, tokenizer.pad_token_id),
        image_token_id=layout.image_token_id,
        image_start_token_id=layout.image_start_token_id,
        image_end_token_id=layout.image_end_token_id,
        visual_token_offset=layout.visual_token_offset,
        image_input_mode="features",
    )
    expected = expected_state_dict_shapes(config)
    listed = indexed_keys(llm_dir)
    if listed is not None:
        check_language_model_keys(listed, expected, "index")

    inputs = [checkpoint, llm_dir]
    with atomic_output_dir(output_dir, overwrite, inputs=inputs, owns=CONVERTED_REPO_ENTRIES) as staging:
        writer = ShardedSafetensorsWriter(staging, max_shard_size, torch_dtype)
        for key, tensor in vision_state_dict.items():
            writer.add("vision_tokenizer." + key, tensor)
        writer.flush()
        del vision_state_dict
        embedding_keys = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")
        stream_language_model(shards, expected, writer, embedding_keys)
        check_complete(expected, writer.keys)
        written = writer.finish()
        summary = ConversionSummary(
            kind="gvt",
            source=checkpoint.name,
            image_input_mode="features",
            dtype=str(torch_dtype or "as released").replace("torch.", ""),
            num_parameters=sum(int(torch.Size(s).numel()) for s in expected.values()),
            num_tensors=len(writer.keys),
            shards=[path.name for path in written],
            vocabulary=asdict(layout),
            gvt_version=__version__,
            ignored_keys=["EVA-02 head.* / norm.* / fc_norm.* (unused)", "rope.freqs_* (derived)"],
        )
        _write_rest(staging, config, tokenizer, layout, summary, model_card)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Verification against recorded reference outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VerificationResult:
    name: str
    max_abs_error: float
    tolerance: float
    exact: bool = False

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance


def verify_conversion(
    repo_dir: str | os.PathLike, reference_file: str | os.PathLike, atol: float = 1e-4
) -> list[VerificationResult]:
    """Run a converted repo on the inputs recorded in `reference_file` (a `.safetensors` of the original code's
    outputs: `pixel_values` plus any of `codes`, `token_counts`, `quantized`, `continuous_features`,
    `decoder_prompt_embeds`, `decoder_pooled_prompt_embeds`, `lowres_decoder_embeds`, the `*_understanding`
    variants, `gvt_projected`, and `input_ids` + `logits` for the language model) and return the max errors.
    Integer outputs count mismatching entries (tolerance 0)."""
    from safetensors.torch import load_file

    from .modeling_lavit import LaVITForCausalLM

    reference = load_file(str(reference_file))
    if "pixel_values" not in reference:
        raise ValueError(f"{reference_file} has no 'pixel_values' (the recorded inputs).")
    model = LaVITForCausalLM.from_pretrained(str(repo_dir), dtype=torch.float32).eval()
    tokenizer = model.vision_tokenizer
    pixels = reference["pixel_values"].float()
    results: list[VerificationResult] = []

    def close(name: str, actual: torch.Tensor) -> None:
        expected = reference[name]
        if tuple(actual.shape) != tuple(expected.shape):
            results.append(VerificationResult(name, float("inf"), atol))
            return
        error = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
        results.append(VerificationResult(name, error, atol))

    def exact(name: str, actual: torch.Tensor) -> None:
        expected = reference[name]
        mismatches = float("inf") if actual.shape != expected.shape else float((actual != expected).sum())
        results.append(VerificationResult(name, mismatches, 0.0, exact=True))

    with torch.no_grad():
        output = tokenizer(pixels)
        mask = output.attention_mask.bool()
        understanding = model.config.image_input_mode == "features" and tokenizer.config.is_discrete
        suffix = "_understanding" if understanding else ""
        if tokenizer.config.is_discrete:
            if f"token_counts{suffix}" in reference:
                exact(
                    f"token_counts{suffix}",
                    output.attention_mask.sum(dim=1).to(reference[f"token_counts{suffix}"].dtype),
                )
            if not understanding and "codes" in reference:
                exact("codes", output.token_ids[mask].to(reference["codes"].dtype))
            if not understanding and "quantized" in reference:
                close("quantized", output.quantized[mask])
            if f"continuous_features{suffix}" in reference:
                close(f"continuous_features{suffix}", output.features[mask])
            if not understanding and tokenizer.config.decoder_types:
                if "highres" in tokenizer.config.decoder_types and "decoder_prompt_embeds" in reference:
                    decoded = tokenizer.decode(output.token_ids, output.attention_mask, decoder_type="highres")
                    close("decoder_prompt_embeds", decoded.prompt_embeds)
                    if "decoder_pooled_prompt_embeds" in reference:
                        close("decoder_pooled_prompt_embeds", decoded.pooled_prompt_embeds)
                if "lowres" in tokenizer.config.decoder_types and "lowres_decoder_embeds" in reference:
                    decoded = tokenizer.decode(output.token_ids, output.attention_mask, decoder_type="lowres")
                    close("lowres_decoder_embeds", decoded.prompt_embeds)
        elif "gvt_projected" in reference:
            close("gvt_projected", output.features)
        if "input_ids" in reference and "logits" in reference:
            attention_mask = reference.get("attention_mask")
            logits = model(input_ids=reference["input_ids"].long(), attention_mask=attention_mask).logits
            close("logits", logits)
    if not results:
        raise ValueError(f"{reference_file} holds no recorded output this model can be compared with.")
    return results


def format_verification(results: list[VerificationResult]) -> str:
    lines = [f"{'output':<36} {'max error':>12} {'tolerance':>10}  status"]
    for result in results:
        unit = " (mismatches)" if result.exact else ""
        lines.append(
            f"{result.name:<36} {result.max_abs_error:>12.3g} {result.tolerance:>10.1g}  "
            f"{'ok' if result.ok else 'FAIL'}{unit}"
        )
    return "\n".join(lines)


def verify_and_push(output_dir: str | os.PathLike, verify: str | None, atol: float, repo_id: str | None) -> int:
    """The conversion scripts' last steps: print the `--verify` table, then push if asked and verification passed.

    Returns the scripts' exit status: 0, or 3 when a verified error exceeds `atol` (nothing is pushed then)."""
    status = 0
    if verify:
        results = verify_conversion(output_dir, verify, atol=atol)
        print(format_verification(results))
        status = 0 if all(result.ok for result in results) else 3
    if repo_id and status == 0:
        print(f"Pushed to {push_to_hub(output_dir, repo_id)}")
    return status


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload a converted folder with `huggingface_hub.HfApi().upload_folder` (creates the repo if needed)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError("HF_HUB_OFFLINE is set: refusing to push. Unset it to upload.")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload converted LaVIT/GVT")
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "convert_lavit_release",
    "convert_gvt_release",
    "verify_conversion",
    "format_verification",
    "push_to_hub",
    "verify_and_push",
    "ShardedSafetensorsWriter",
    "VocabularyLayout",
    "ConversionSummary",
    "VerificationResult",
    "extend_lavit_tokenizer",
    "extend_gvt_tokenizer",
    "extend_rows",
    "mean_row",
    "find_language_model_shards",
    "iter_checkpoint_tensors",
    "parse_size",
    "LANGUAGE_MODEL_DIR",
    "DECODER_SUBFOLDERS",
    "CAPTION_GENERATION_DEFAULTS",
    "VQA_GENERATION_DEFAULTS",
    "VQA_PROMPT",
    "IMAGE_GENERATION_DEFAULTS",
]
