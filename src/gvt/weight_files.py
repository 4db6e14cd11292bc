"""Errors that name the weight file: a truncated or corrupted checkpoint raises a `ValueError` saying which file,
instead of a bare safetensors / zip / unpickling error.

- [`checkpoint_read_errors`]: around reading one known file (the conversion scripts, training checkpoints).
- [`weight_read_errors`]: around `from_pretrained` of a local folder; when loading fails on a weight file, the
  folder's weight files are checked and the first unreadable one is named.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _is_read_error(error: BaseException) -> bool:
    return type(error).__name__ == "SafetensorError" or isinstance(
        error, (RuntimeError, EOFError, pickle.UnpicklingError, OSError)
    )


def _describe(error: BaseException) -> str:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"


@contextmanager
def checkpoint_read_errors(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise what reading the checkpoint `path` fails with (a safetensors header error, a truncated zip, a refused
    pickle) as a `ValueError` that names the file."""
    try:
        yield
    except (ValueError, FileNotFoundError):
        raise
    except Exception as error:
        if not _is_read_error(error):
            raise
        raise ValueError(
            f"Cannot read the checkpoint {path} (truncated, corrupted or not a checkpoint?): {_describe(error)}"
        ) from error


def unreadable_weight_file(folder: str | os.PathLike) -> tuple[Path, BaseException] | None:
    """The first weight file of `folder` that cannot be opened (safetensors headers are checked, pickles loaded with
    `weights_only=True`), with its error; `None` if all open."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if path.suffix not in WEIGHT_SUFFIXES or not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt", device="cpu") as handle:
                    handle.keys()
            else:
                import torch

                try:
                    torch.load(str(path), map_location="meta", weights_only=True, mmap=True)
                except RuntimeError:  # a legacy (non-zip) pickle cannot be memory-mapped
                    torch.load(str(path), map_location="meta", weights_only=True)
        except Exception as error:
            return path, error
    return None


@contextmanager
def weight_read_errors(pretrained_model_name_or_path, subfolder: str = "") -> Iterator[None]:
    """Around `from_pretrained`: if loading a local folder fails while reading weights, raise a `ValueError` naming the
    unreadable file."""
    try:
        yield
    except Exception as error:
        if not _is_read_error(error) or pretrained_model_name_or_path is None:
            raise
        folder = Path(pretrained_model_name_or_path) / (subfolder or "")
        broken = unreadable_weight_file(folder)
        if broken is None:
            raise
        path, cause = broken
        raise ValueError(
            f"Cannot read the weights file {path} (truncated or corrupted?): {_describe(cause)}. Download or save "
            "the model again."
        ) from error


__all__ = ["checkpoint_read_errors", "weight_read_errors", "unreadable_weight_file"]
