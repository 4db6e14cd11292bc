"""Reconstruct image files through a [`LaVITDecoderPipeline`] (tokenize, then decode): the library side of
`gvt reconstruct`. Kept out of `pipeline_lavit_decoder.py`, whose code travels into saved decoder folders."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic_write import atomic_output_file, check_output_file
from .image_processing_gvt import load_image
from .pipeline_lavit_decoder import LaVITDecoderPipeline


def reconstruct_files(
    pipeline: LaVITDecoderPipeline,
    image_paths: list[str | os.PathLike],
    output_dir: str | os.PathLike,
    seed: int = 0,
    **call_kwargs,
) -> list[Path]:
    """Tokenize and decode image files with `pipeline`; write `<stem>_reconstruction.png` files into `output_dir`.

    Every file is read first with the image processor's loader (EXIF rotation, transparency onto white, grayscale to
    RGB, explicit bit depths), so an unreadable one raises a `ValueError` naming it before any work is done."""
    output_dir = Path(output_dir)
    targets = [output_dir / f"{Path(path).stem}_reconstruction.png" for path in image_paths]
    clashes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashes:
        raise ValueError(f"Several images would be written to the same file {clashes}; give images of distinct names.")
    for target in targets:
        check_output_file(target, inputs=image_paths)
    images = []
    for path in image_paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"No image file at {path}.")
        images.append(load_image(os.fspath(path)))
    generators = [torch.Generator().manual_seed(seed + index) for index in range(len(images))]
    outputs = pipeline(images=images, generator=generators, output_type="pil", **call_kwargs).images
    for target, image in zip(targets, outputs):
        with atomic_output_file(target) as staging:
            image.save(staging, format="PNG")
    return targets


__all__ = ["reconstruct_files"]
