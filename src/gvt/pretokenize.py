"""Pre-tokenization at scale: an image dataset -> parquet shards of visual token ids, data-parallel and resumable.

    from gvt.pretokenize import PretokenizeArguments, pretokenize, load_pretokenized

    pretokenize(PretokenizeArguments(source="images/", output_dir="ids", shard_size=10_000))
    rows = load_pretokenized("ids")     # key, visual_token_ids, num_tokens, + the source's text columns

The same call runs under `torchrun --nproc_per_node N -m gvt.cli pretokenize ...` or `accelerate launch`: every
process reads `RANK` / `WORLD_SIZE` and takes its own output shards.

Layout of the work (it does not depend on the number of processes, so neither does the output):

- The source is cut into *input shards*: a map-style dataset is one input shard; a streaming one has one per source
  file (`IterableDataset.num_shards`, read with `IterableDataset.shard(num_shards, index)`).
- Each input shard is cut into *output shards* of `shard_size` consecutive rows:
  `data/shard-{input:05d}-{chunk:05d}.parquet`. With at least as many input shards as processes, input shard `j`
  goes to rank `j % world_size` (each process reads only its files); else output shard `(j, k)` goes to rank
  `(j + k) % world_size` (a map-style dataset reads only its rows; a stream is read by every process, which decodes
  and tokenizes only its own chunks).
- A shard is written through [`gvt.atomic_write.atomic_output_file`], then its entry
  `manifest/shard-{input}-{chunk}.json` (rows, skipped images, content and file hashes, the rank that wrote it), also
  atomically. A shard counts as done only when its entry exists and the file's hash matches it; on a restart done
  shards are skipped and every other one is computed again from the same rows, so a run killed at any moment and
  restarted gives exactly the rows of an uninterrupted run: none lost, none twice. A streaming input shard read to
  its end is recorded in `manifest/input-{input:05d}.json` (its number of chunks).
- `manifest.json` holds the run's settings (written first: a restart with other settings is refused) and, once every
  rank is done, the list of shards and the totals (`"complete": true`).

Each row of a shard: `key` (the `id_column` as a string, else the row's position: `"{index}"`, or `"{input}:{index}"`
for a stream of several files), `visual_token_ids` (list<int32>, codebook indices), `num_tokens`, and the source's
other columns (captions...) carried over. An image that fails to decode is skipped and counted, or raises
(`on_bad_image="raise"`).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers.utils import logging

from .atomic_write import atomic_output_file, check_output_dir, write_text_atomically
from .image_processing_gvt import load_image

logger = logging.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
DATA_DIR = "data"
ENTRY_DIR = "manifest"
FORMAT_VERSION = 1
COORDINATION_TIMEOUT = datetime.timedelta(hours=24)
"""How long a process waits for the others (at the end, the fastest waits for the slowest)."""
PREFETCH = 2
"""Batches whose images are decoded ahead of the one being tokenized."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PretokenizeArguments:
    """What `pretokenize` does (the `gvt pretokenize` options, typed).

    Args:
        source: an image folder (`datasets`' imagefolder; a `metadata.jsonl` adds caption columns), a `.json` /
            `.jsonl` / `.parquet` file or a pattern of them (`"data/*.parquet"`: one input shard per file when
            streaming; image paths relative to the files' folder, or image bytes), `synthetic:N`, or a name / folder
            for `datasets.load_dataset`.
        output_dir: where the shards and the manifest go (new, or a previous run with the same settings: resumed).
        model: a LaVIT repo or `GVTVisionTokenizer` folder / Hub id; None: the embedded default; `"random"`: a tiny
            random tokenizer seeded with `seed` (trials). Ignored when `pretokenize` is given a tokenizer.
        split: the dataset split.
        streaming: read the source as a `datasets.IterableDataset` (each source file an input shard).
        batch_size: images per forward pass of the tokenizer.
        num_workers: threads that decode images (Pillow releases the GIL), `PREFETCH` batches ahead of the one being
            tokenized; 0: decode in the main thread. Does not change the output.
        shard_size: rows per output shard.
        dtype: the tokenizer's dtype (`"float32"`, `"bfloat16"`, `"float16"`).
        device: where the tokenizer runs (default: this rank's GPU `cuda:LOCAL_RANK` if there is one, else the CPU).
        selection: `"deterministic"` (keep where p(keep) >= 0.5) or `"sample"` (seeded per shard and batch).
        seed: the seed of `"sample"` (and of the `"random"` model).
        max_tokens: keep at most this many tokens per image.
        on_bad_image: an image that fails to decode raises (`"raise"`) or is skipped and counted (`"skip"`).
        image_column: the image column.
        id_column: a column of unique row ids used as `key` (when the source has it), else the row position.
        text_columns: columns carried into the shards (default: every column but the image column).
        progress: show a tqdm bar with images/s (main process).
    """

    source: str
    output_dir: str
    model: str | None = None
    split: str = "train"
    streaming: bool = False
    batch_size: int = 32
    num_workers: int = 0
    shard_size: int = 10_000
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None
    selection: Literal["deterministic", "sample"] = "deterministic"
    seed: int = 0
    max_tokens: int | None = None
    on_bad_image: Literal["raise", "skip"] = "skip"
    image_column: str = "image"
    id_column: str = "id"
    text_columns: list[str] | None = None
    progress: bool = True

    def __post_init__(self):
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}.")
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError(f"batch_size and shard_size must be >= 1, got {self.batch_size} and {self.shard_size}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}.")
        if self.selection not in ("deterministic", "sample"):
            raise ValueError(f"selection must be 'deterministic' or 'sample', got {self.selection!r}.")
        if self.on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {self.on_bad_image!r}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}.")

    def settings(self, model_fingerprint: str) -> dict[str, Any]:
        """What decides the output rows: a restart must match these (the batch size only matters when sampling)."""
        source = self.source
        if Path(source).exists() or glob.has_magic(source):
            source = os.path.abspath(os.path.expanduser(source))
        settings = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "split": self.split,
            "streaming": self.streaming,
            "shard_size": self.shard_size,
            "dtype": self.dtype,
            "selection": self.selection,
            "seed": self.seed if self.selection == "sample" or self.model == "random" else None,
            "batch_size": self.batch_size if self.selection == "sample" else None,
            "max_tokens": self.max_tokens,
            "image_column": self.image_column,
            "id_column": self.id_column,
            "text_columns": self.text_columns,
            "model": model_fingerprint,
        }
        return settings


@dataclass
class PretokenizeResult:
    """What one process did (`pretokenize`'s return value)."""

    output_dir: str
    rank: int
    world_size: int
    shards_written: int
    shards_skipped: int
    rows_written: int
    images_skipped: int
    seconds: float
    """The whole call (model and dataset loading included)."""
    shard_seconds: float
    """The part spent on this rank's shards (decoding, tokenizing, writing, checking done ones)."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """The final manifest (main process, once every rank is done)."""


# ----------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------


class _Ranks:
    """This process's rank and the world size, from torch.distributed or the `RANK` / `WORLD_SIZE` of torchrun and
    accelerate; a gloo group (small messages only) when there are several."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.created = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank = int(os.environ.get("RANK", "0"))
            self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
            if self.world_size > 1:
                dist.init_process_group(backend="gloo", timeout=COORDINATION_TIMEOUT)
                self.created = True
        self.group = None
        if self.world_size > 1 and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            self.dist.barrier(group=self.group)

    def from_main(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        if self.world_size == 1:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.created:
            self.dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# Source, model
# ----------------------------------------------------------------------------------------------------------------


def _load_source(arguments: PretokenizeArguments):
    """The dataset, its image column set to `decode=False` (images are decoded here, so a bad one can be skipped)."""
    import datasets

    from .training.llm_training import load_rows

    rows = load_rows(arguments.source, arguments.split, streaming=arguments.streaming)
    features = rows.features
    if features is not None and arguments.image_column not in features:
        raise ValueError(
            f"The source {arguments.source} has no image column {arguments.image_column!r} (columns: "
            f"{sorted(features)}); pass image_column (--image-column)."
        )
    if features is not None and isinstance(features[arguments.image_column], datasets.Image):
        rows = rows.cast_column(arguments.image_column, datasets.Image(decode=False))
    return rows


def _load_model(arguments: PretokenizeArguments, vision_tokenizer, image_processor, rank: int):
    if vision_tokenizer is None:
        if arguments.model == "random":
            from .tokenize_images import load_tokenizer_and_processor

            vision_tokenizer, default_processor = load_tokenizer_and_processor(None, seed=arguments.seed)
        else:
            from .default_model import load_vision_tokenizer

            vision_tokenizer, default_processor = load_vision_tokenizer(arguments.model)
        image_processor = image_processor or default_processor
    if image_processor is None:
        from .image_processing_gvt import GVTImageProcessor

        size = vision_tokenizer.config.image_size
        image_processor = GVTImageProcessor(size={"height": size, "width": size})
    device = arguments.device
    if device is None:
        device = (
            f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
            if (torch.cuda.is_available())
            else "cpu"
        )
    vision_tokenizer = vision_tokenizer.to(device=device, dtype=DTYPES[arguments.dtype]).eval()
    return vision_tokenizer, image_processor


def _model_fingerprint(arguments: PretokenizeArguments, vision_tokenizer) -> str:
    """The model's name and a hash of its config (weights are not hashed: a 7B model would take minutes)."""
    config = vision_tokenizer.config.to_json_string(use_diff=False)
    digest = hashlib.sha256(config.encode()).hexdigest()[:16]
    name = arguments.model if arguments.model is not None else getattr(vision_tokenizer, "name_or_path", "") or ""
    return f"{name}@config-{digest}"


# ----------------------------------------------------------------------------------------------------------------
# Output folder and manifest
# ----------------------------------------------------------------------------------------------------------------


def _shard_name(input_shard: int, chunk: int) -> str:
    return f"shard-{input_shard:05d}-{chunk:05d}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _shard_done(output_dir: Path, name: str) -> dict[str, Any] | None:
    """The entry of a complete shard (its file present with the recorded hash), else None."""
    entry = _read_json(output_dir / ENTRY_DIR / f"{name}.json")
    if entry is None:
        return None
    path = output_dir / DATA_DIR / f"{name}.parquet"
    if not path.is_file() or path.stat().st_size != entry["bytes"] or _file_sha256(path) != entry["file_sha256"]:
        logger.warning(f"The shard {path} does not match its manifest entry; it is written again.")
        return None
    return entry


def _prepare_output_dir(output_dir: str, settings: dict[str, Any], source: str) -> Path:
    """Check the output folder (a new or empty one, or a run with the same settings) and write the settings."""
    target = check_output_dir(output_dir, overwrite=True, inputs=[source] if Path(source).exists() else [])
    manifest_path = target / MANIFEST_NAME
    if target.is_dir() and any(target.iterdir()):
        previous = _read_json(manifest_path)
        if previous is None or "settings" not in previous:
            raise FileExistsError(
                f"The output folder {target} is not empty and holds no {MANIFEST_NAME} of a pre-tokenization run; "
                "give a new or empty folder."
            )
        if previous["settings"] != settings:
            changed = sorted(key for key in settings if previous["settings"].get(key) != settings[key])
            differences = ", ".join(
                f"{key}: {previous['settings'].get(key)!r} -> {settings[key]!r}" for key in changed
            )
            raise ValueError(
                f"The output folder {target} holds a pre-tokenization run with other settings ({differences}); resume "
                "with the same settings or give a new folder."
            )
        logger.info(f"Resuming the pre-tokenization run in {target}.")
        return target
    (target / DATA_DIR).mkdir(parents=True, exist_ok=True)
    (target / ENTRY_DIR).mkdir(exist_ok=True)
    write_text_atomically(manifest_path, json.dumps({"settings": settings, "complete": False}, indent=1))
    return target


def _write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_output_file(path) as staging:
        pq.write_table(table, staging)


def _write_entry(entry: dict[str, Any], path: Path) -> None:
    write_text_atomically(path, json.dumps(entry, indent=1))


def _content_sha256(keys: list[str], offsets: np.ndarray, values: np.ndarray) -> str:
    """A hash of the rows' keys and ids (independent of how parquet encodes them)."""
    digest = hashlib.sha256()
    digest.update("\n".join(keys).encode())
    digest.update(np.ascontiguousarray(offsets, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(values, dtype="<i4").tobytes())
    return digest.hexdigest()


def _finish_manifest(output_dir: Path, settings: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Check that every shard of the run is done and write the final manifest."""
    entries = [_shard_done(output_dir, name) for name in names]
    missing = [name for name, entry in zip(names, entries) if entry is None]
    if missing:
        raise RuntimeError(f"Shards {missing[:5]} of {len(names)} are missing after every process finished.")
    manifest = {
        "settings": settings,
        "complete": True,
        "num_shards": len(entries),
        "num_rows": sum(entry["rows"] for entry in entries),
        "num_skipped_images": sum(entry["skipped_images"] for entry in entries),
        "shards": entries,
    }
    write_text_atomically(output_dir / MANIFEST_NAME, json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Work
# ----------------------------------------------------------------------------------------------------------------


class _ShardWriter:
    """Tokenizes the rows of one output shard in batches and writes the shard and its entry."""

    def __init__(
        self, arguments: PretokenizeArguments, vision_tokenizer, image_processor, output_dir: Path, bar, ranks: _Ranks
    ):
        from .training.llm_training import dataset_image_root

        self.ranks = ranks
        self.arguments = arguments
        self.vision_tokenizer = vision_tokenizer
        self.image_processor = image_processor
        self.output_dir = output_dir
        self.image_root = dataset_image_root(arguments.source)
        self.bar = bar
        self.device = next(vision_tokenizer.parameters()).device
        self.dtype = next(vision_tokenizer.parameters()).dtype
        self.pool = ThreadPoolExecutor(arguments.num_workers) if arguments.num_workers > 0 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def _load_one(self, image: Any) -> Any:
        """One decoded image, or the error that decoding it raised (handled in row order by `_collect`)."""
        if isinstance(image, str) and self.image_root is not None and not os.path.isabs(image):
            image = os.path.join(self.image_root, image)
        try:
            if image is None:
                raise ValueError("the row has no image")
            return load_image(image)
        except (ValueError, TypeError, OSError) as error:
            return error

    def _submit(self, images: list[Any]) -> list[Any]:
        """Start decoding a batch: futures on the decoding threads, or the decoded images when there are none."""
        if self.pool is None:
            return [self._load_one(image) for image in images]
        return [self.pool.submit(self._load_one, image) for image in images]

    def _collect(self, pending: list[Any], keys: list[str]) -> tuple[list[Any], list[bool]]:
        """(decoded images, which rows have one) of a submitted batch; a bad image raises or is skipped."""
        loaded, ok = [], []
        for result, key in zip(pending, keys):
            if isinstance(result, Future):
                result = result.result()
            if isinstance(result, Exception):
                if self.arguments.on_bad_image == "raise":
                    raise ValueError(
                        f"Row {key!r} of {self.arguments.source}: could not load its image: {result}. Pass "
                        "on_bad_image='skip' (--on-bad-image skip) to skip and count such images."
                    ) from result
                logger.warning(f"Skipping row {key!r}: could not load its image ({result}).")
                ok.append(False)
            else:
                loaded.append(result)
                ok.append(True)
        return loaded, ok

    @torch.no_grad()
    def _tokenize(self, images: list[Any], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes `[B, L]`, counts `[B]`) of decoded images: one padded batch through the tokenizer."""
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
        output = self.vision_tokenizer.tokenize(
            pixel_values.to(device=self.device, dtype=self.dtype),
            selection=self.arguments.selection,
            generator=generator,
            max_tokens=self.arguments.max_tokens,
        )
        return output.token_ids.cpu(), output.attention_mask.sum(dim=1).cpu()

    def write(self, input_shard: int, chunk: int, rows: dict[str, list]) -> dict[str, Any]:
        """Tokenize `rows` (columns of at most `shard_size` rows, with a `key` column) and write the shard."""
        import pyarrow as pa

        arguments = self.arguments
        if arguments.image_column not in rows:
            raise ValueError(
                f"The source {arguments.source} has no image column {arguments.image_column!r} (columns: "
                f"{sorted(column for column in rows if column != 'key')}); pass image_column (--image-column)."
            )
        name = _shard_name(input_shard, chunk)
        keys = rows["key"]
        kept = np.zeros(len(keys), dtype=bool)
        codes: list[torch.Tensor] = []
        counts: list[torch.Tensor] = []
        starts = list(range(0, len(keys), arguments.batch_size))
        column = rows[arguments.image_column]
        pending = deque(self._submit(column[start : start + arguments.batch_size]) for start in starts[:PREFETCH])
        for batch_index, start in enumerate(starts):
            stop = start + arguments.batch_size
            submitted = pending.popleft()
            if batch_index + PREFETCH < len(starts):  # decode ahead while this batch is tokenized
                ahead = starts[batch_index + PREFETCH]
                pending.append(self._submit(column[ahead : ahead + arguments.batch_size]))
            images, ok = self._collect(submitted, keys[start:stop])
            kept[start:stop] = ok
            if images:
                generator = None
                if arguments.selection == "sample":
                    batch_seed = hashlib.sha256(f"{arguments.seed}:{input_shard}:{chunk}:{batch_index}".encode())
                    generator = torch.Generator(device=self.device).manual_seed(
                        int.from_bytes(batch_seed.digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF
                    )
                batch_codes, batch_counts = self._tokenize(images, generator)
                mask = torch.arange(batch_codes.shape[1]) < batch_counts[:, None]
                codes.append(batch_codes[mask])
                counts.append(batch_counts)
            if self.bar is not None:
                self.bar.update(len(ok))
        values = torch.cat(codes).numpy().astype(np.int32) if codes else np.zeros(0, np.int32)
        num_tokens = torch.cat(counts).numpy().astype(np.int32) if counts else np.zeros(0, np.int32)
        offsets = np.concatenate(([0], np.cumsum(num_tokens, dtype=np.int64))).astype(np.int32)
        kept_keys = [key for key, keep in zip(keys, kept) if keep]
        columns = {
            "key": pa.array(kept_keys, type=pa.string()),
            "visual_token_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
            "num_tokens": pa.array(num_tokens),
        }
        carried = pa.table({column: rows[column] for column in self._carried(rows)}).filter(pa.array(kept))
        table = pa.table({**columns, **{column: carried[column] for column in carried.column_names}})
        path = self.output_dir / DATA_DIR / f"{name}.parquet"
        _write_parquet(table, path)
        entry = {
            "name": name,
            "file": f"{DATA_DIR}/{name}.parquet",
            "input_shard": input_shard,
            "chunk": chunk,
            "rows": len(kept_keys),
            "skipped_images": int(len(keys) - kept.sum()),
            "num_tokens": int(num_tokens.sum()),
            "content_sha256": _content_sha256(kept_keys, offsets, values),
            "file_sha256": _file_sha256(path),
            "bytes": path.stat().st_size,
            "written_by": {"rank": self.ranks.rank, "world_size": self.ranks.world_size},
        }
        _write_entry(entry, self.output_dir / ENTRY_DIR / f"{name}.json")
        return entry

    def _carried(self, rows: dict[str, list]) -> list[str]:
        reserved = {"key", "visual_token_ids", "num_tokens", self.arguments.image_column}
        if self.arguments.text_columns is not None:
            missing = [column for column in self.arguments.text_columns if column not in rows]
            if missing:
                raise ValueError(f"The source has no column(s) {missing} (text_columns); it has {sorted(rows)}.")
            return [column for column in self.arguments.text_columns if column not in reserved]
        return [column for column in rows if column not in reserved and column != "__key"]


def _num_rows(batch: dict[str, list]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _with_keys(batch: dict[str, list], arguments: PretokenizeArguments, first: int, prefix: str) -> dict[str, list]:
    """Add the `key` column: the id column as strings, else the row positions (`prefix` + index)."""
    size = _num_rows(batch)
    if arguments.id_column in batch:
        keys = [str(value) for value in batch[arguments.id_column]]
    else:
        keys = [f"{prefix}{index}" for index in range(first, first + size)]
    return {**batch, "key": keys}


def _slice_with_keys(dataset, start: int, stop: int, arguments: PretokenizeArguments) -> dict[str, list]:
    return _with_keys(dataset[start:stop], arguments, start, "")


def _owner(input_shard: int, chunk: int, num_inputs: int, world_size: int) -> int:
    """The rank that writes output shard (`input_shard`, `chunk`): whole input shards round-robin when there are at
    least as many as processes (each process reads only its own files), else chunks round-robin (every process reads
    the input, and decodes and tokenizes only its own chunks). Which shards exist does not depend on this."""
    if num_inputs >= world_size:
        return input_shard % world_size
    return (input_shard + chunk) % world_size


def _map_style_chunks(dataset, arguments: PretokenizeArguments, ranks: _Ranks) -> Iterator[tuple[int, int, Any]]:
    """(input shard 0, chunk k, rows loader) of this rank's output shards."""
    num_chunks = math.ceil(len(dataset) / arguments.shard_size)
    for chunk in range(num_chunks):
        if _owner(0, chunk, 1, ranks.world_size) == ranks.rank:
            start = chunk * arguments.shard_size
            stop = min(start + arguments.shard_size, len(dataset))
            yield 0, chunk, partial(_slice_with_keys, dataset, start, stop, arguments)


def _streaming_chunks(dataset, arguments: PretokenizeArguments, ranks: _Ranks, output_dir: Path):
    """(input shard j, chunk k, rows loader) of this rank's output shards, reading each input shard (a source file)
    once. When an input shard has been read to its end, `manifest/input-{j}.json` records its number of chunks, so
    that a restart reads it again only if one of this rank's chunks is not done."""
    num_inputs = dataset.num_shards
    for input_shard in range(num_inputs):
        if num_inputs >= ranks.world_size and _owner(input_shard, 0, num_inputs, ranks.world_size) != ranks.rank:
            continue
        marker = output_dir / ENTRY_DIR / f"input-{input_shard:05d}.json"
        read = _read_json(marker)
        if read is not None and all(
            _shard_done(output_dir, _shard_name(input_shard, chunk)) is not None
            for chunk in range(read["chunks"])
            if _owner(input_shard, chunk, num_inputs, ranks.world_size) == ranks.rank
        ):
            continue
        stream = dataset if num_inputs == 1 else dataset.shard(num_shards=num_inputs, index=input_shard)
        prefix = "" if num_inputs == 1 else f"{input_shard}:"
        chunk, first = 0, 0
        for batch in stream.iter(batch_size=arguments.shard_size):
            if _owner(input_shard, chunk, num_inputs, ranks.world_size) == ranks.rank:
                yield input_shard, chunk, partial(_with_keys, batch, arguments, first, prefix)
            chunk, first = chunk + 1, first + _num_rows(batch)
        if _owner(input_shard, 0, num_inputs, ranks.world_size) == ranks.rank:  # one writer per marker
            _write_entry({"input_shard": input_shard, "chunks": chunk, "rows": first}, marker)


def _expected_shards(dataset, arguments: PretokenizeArguments, output_dir: Path) -> list[str]:
    """Names of every output shard of the run (after all ranks finished)."""
    if not arguments.streaming:
        return [_shard_name(0, chunk) for chunk in range(math.ceil(len(dataset) / arguments.shard_size))]
    names = []
    for input_shard in range(dataset.num_shards):
        marker = _read_json(output_dir / ENTRY_DIR / f"input-{input_shard:05d}.json")
        if marker is None:
            raise RuntimeError(f"The input shard {input_shard} was not read to its end by any process.")
        names.extend(_shard_name(input_shard, chunk) for chunk in range(marker["chunks"]))
    return names


def pretokenize(arguments: PretokenizeArguments, vision_tokenizer=None, image_processor=None) -> PretokenizeResult:
    """Turn the images of `arguments.source` into parquet shards of visual token ids (see the module docstring).

    Args:
        arguments: the run's settings.
        vision_tokenizer ([`GVTVisionTokenizer`], *optional*): the tokenizer (default: loaded from `arguments.model`);
            it is moved to `arguments.device` / `arguments.dtype` and put in eval mode.
        image_processor ([`GVTImageProcessor`], *optional*): turns images into `pixel_values` (default: the model's,
            or one at the tokenizer's image size).

    Returns a [`PretokenizeResult`] of this process; the main process's holds the final manifest.
    """
    started = time.perf_counter()
    ranks = _Ranks()
    vision_tokenizer, image_processor = _load_model(arguments, vision_tokenizer, image_processor, ranks.rank)
    settings = arguments.settings(_model_fingerprint(arguments, vision_tokenizer))
    error = None
    if ranks.is_main:
        try:
            output_dir = _prepare_output_dir(arguments.output_dir, settings, arguments.source)
        except (ValueError, FileExistsError) as raised:
            error = raised
    error = ranks.from_main(error)
    if error is not None:
        raise error
    output_dir = Path(arguments.output_dir).resolve()

    if not ranks.is_main:  # the main process fills the datasets cache first (map-style)
        ranks.barrier()
    dataset = _load_source(arguments)
    if ranks.is_main:
        ranks.barrier()
    if arguments.streaming:
        chunks = _streaming_chunks(dataset, arguments, ranks, output_dir)
        total = None
    else:
        chunks = _map_style_chunks(dataset, arguments, ranks)
        total = sum(
            min(arguments.shard_size, len(dataset) - chunk * arguments.shard_size)
            for chunk in range(math.ceil(len(dataset) / arguments.shard_size))
            if _owner(0, chunk, 1, ranks.world_size) == ranks.rank
        )

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        unit="img",
        desc=f"pretokenize [rank {ranks.rank}/{ranks.world_size}]",
        disable=not arguments.progress or not ranks.is_main,
    )
    writer = _ShardWriter(arguments, vision_tokenizer, image_processor, output_dir, bar, ranks)
    written = skipped_shards = rows_written = images_skipped = 0
    shards_started = time.perf_counter()
    try:
        for input_shard, chunk, load in chunks:
            done = _shard_done(output_dir, _shard_name(input_shard, chunk))
            if done is not None:
                skipped_shards += 1
                bar.update(done["rows"] + done["skipped_images"])
                continue
            entry = writer.write(input_shard, chunk, load())
            written += 1
            rows_written += entry["rows"]
            images_skipped += entry["skipped_images"]
    finally:
        writer.close()
        bar.close()
    shard_seconds = time.perf_counter() - shards_started

    ranks.barrier()
    manifest = {}
    if ranks.is_main:
        manifest = _finish_manifest(output_dir, settings, _expected_shards(dataset, arguments, output_dir))
    ranks.barrier()
    ranks.close()
    return PretokenizeResult(
        output_dir=str(output_dir),
        rank=ranks.rank,
        world_size=ranks.world_size,
        shards_written=written,
        shards_skipped=skipped_shards,
        rows_written=rows_written,
        images_skipped=images_skipped,
        seconds=time.perf_counter() - started,
        shard_seconds=shard_seconds,
        manifest=manifest,
    )


# ----------------------------------------------------------------------------------------------------------------
# Reading back
# ----------------------------------------------------------------------------------------------------------------


def load_pretokenized(output_dir: str | os.PathLike, streaming: bool = False, allow_incomplete: bool = False):
    """The rows of a pre-tokenization run as a `datasets.Dataset` (or `IterableDataset` with `streaming=True`), in
    shard order: `key`, `visual_token_ids`, `num_tokens` and the carried-over columns. [`GVTDataCollator`] turns
    them into training batches without pixels. Map-style reading converts the shards into the `datasets` cache once
    (Arrow); `streaming=True` reads the parquet files as they are.

    Raises `FileNotFoundError` for a folder without a manifest, `ValueError` for an unfinished run (resume it first,
    or pass `allow_incomplete=True` to read the shards done so far)."""
    import datasets

    folder = Path(output_dir)
    manifest = _read_json(folder / MANIFEST_NAME)
    if manifest is None:
        raise FileNotFoundError(f"{folder} holds no {MANIFEST_NAME}: it is not a pre-tokenization output.")
    if not manifest.get("complete") and not allow_incomplete:
        raise ValueError(
            f"The pre-tokenization run in {folder} is not complete; run it again with the same settings to finish it."
        )
    if manifest.get("complete"):
        files = [str(folder / entry["file"]) for entry in manifest["shards"]]
    else:
        files = [
            str(folder / entry["file"])
            for entry in (_read_json(path) for path in sorted((folder / ENTRY_DIR).glob("shard-*.json")))
        ]
    if not files:
        raise ValueError(f"The pre-tokenization run in {folder} holds no shard.")
    return datasets.load_dataset("parquet", data_files=files, split="train", streaming=streaming)


__all__ = ["PretokenizeArguments", "PretokenizeResult", "pretokenize", "load_pretokenized"]
