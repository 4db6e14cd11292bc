"""The embedded default: a tiny LaVIT (visual tokenizer + Llama + decoder pipeline) trained on the synthetic GVTBench
scenes by the repository's recipe (`recipes/default_model/train.py`, gvt's public training API only), shipped in
`weights/` (safetensors, with its model card, metrics and training log).

    from gvt.default_model import load_default
    default = load_default()            # model, processor, decoder pipeline
    pipe = default.captioner()          # pipeline("image-to-text", ...) on the shipped folder

The folder is a `save_pretrained` repo without its code files (the package is its code):
`AutoModelForImageTextToText.from_pretrained(DEFAULT_MODEL_DIR)` and `AutoProcessor.from_pretrained(DEFAULT_MODEL_DIR)`
after `import gvt`. For a Python without the package (or to upload it), `export(folder)` writes a standalone copy
that carries its code: `trust_remote_code=True` then loads the model, the processor, the image-to-text pipeline and
(`diffusers.DiffusionPipeline`) the decoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights"
DECODER_SUBFOLDER = "decoder"


@dataclass
class DefaultModel:
    """A loaded default: `model` (`LaVITForCausalLM`), `processor` (`GVTProcessor`), `decoder`
    (`LaVITDecoderPipeline` sharing the model's vision tokenizer, or None when the folder has none) and `path`."""

    model: Any
    processor: Any
    decoder: Any
    path: Path

    def captioner(self):
        """The image-to-text pipeline on this model (an image alone gives a caption; `text=` asks a question)."""
        from transformers import pipeline

        from ..pipeline_image_to_text import GVTImageToTextPipeline

        return pipeline(
            "image-text-to-text",
            model=self.model,
            processor=self.processor,
            pipeline_class=GVTImageToTextPipeline,
        )


def check_model_dir(path: str | os.PathLike | None = None) -> Path:
    """The repo folder to load (default: the shipped weights); a clear error when it is missing."""
    folder = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if not (folder / "config.json").is_file():
        hint = (
            "The shipped default is missing from this installation; train it with the gvt repository's recipe "
            "(`python recipes/default_model/train.py --output-dir FOLDER`) and pass `--model FOLDER`."
            if path is None
            else "Pass a folder written by `save_pretrained` (config.json, model.safetensors, processor files)."
        )
        raise FileNotFoundError(f"No model repo at {folder}. {hint}")
    return folder


def load_default(path: str | os.PathLike | None = None, with_decoder: bool = True) -> DefaultModel:
    """Load the shipped default (or the repo folder `path`) through the Auto classes, in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .. import LaVITDecoderPipeline  # noqa: F401  (registers the Auto classes)

    folder = check_model_dir(path)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    decoder = None
    if with_decoder and (folder / DECODER_SUBFOLDER / "model_index.json").is_file():
        decoder = LaVITDecoderPipeline.from_pretrained(
            folder / DECODER_SUBFOLDER, vision_tokenizer=model.vision_tokenizer
        )
        decoder.set_progress_bar_config(disable=True)
    return DefaultModel(model=model, processor=processor, decoder=decoder, path=folder)


def export(output_dir: str | os.PathLike, path: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write a standalone copy of the default (or of the repo folder `path`) to `output_dir`: the same weights,
    processor, generation config, model card and metrics, plus the code files and `auto_map` entries that
    `trust_remote_code=True` needs, in the root and in `decoder/`. Returns the folder.

    Written through [`gvt.atomic_write.atomic_output_dir`]: staged beside the target and renamed into place; a
    non-empty `output_dir` is refused unless `overwrite=True` (other files in it are kept), and `output_dir` may not
    be, lie inside or contain the source folder."""
    import shutil

    from ..atomic_write import HF_WEIGHT_FILES, atomic_output_dir, check_output_dir
    from ..pipeline_lavit_decoder import LaVITDecoderPipeline

    source = check_model_dir(path).resolve()
    owns = (*HF_WEIGHT_FILES, DECODER_SUBFOLDER, "*.py")
    check_output_dir(output_dir, overwrite=overwrite, inputs=[source], owns=owns)
    default = load_default(source, with_decoder=False)
    with atomic_output_dir(output_dir, overwrite=overwrite, inputs=[source], owns=owns) as staging:
        default.model.save_pretrained(staging)
        default.processor.save_pretrained(staging)
        if (source / DECODER_SUBFOLDER / "model_index.json").is_file():
            LaVITDecoderPipeline.from_pretrained(source / DECODER_SUBFOLDER).save_pretrained(
                staging / DECODER_SUBFOLDER
            )
        for name in ("README.md", "metrics.json", "training_log.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
    return Path(output_dir).resolve()


def load_vision_tokenizer(path: str | os.PathLike | None = None):
    """(vision tokenizer, image processor) of the default, of a full LaVIT repo folder, or of a `GVTVisionTokenizer`
    folder / Hub id."""
    import json

    from ..image_processing_gvt import GVTImageProcessor
    from ..modeling_gvt import GVTVisionTokenizer

    if (
        path is None
        or (Path(path) / "config.json").is_file()
        and json.loads((Path(path) / "config.json").read_text()).get("model_type") == "gvt"
    ):
        default = load_default(path, with_decoder=False)
        return default.model.vision_tokenizer, default.processor.image_processor
    tokenizer = GVTVisionTokenizer.from_pretrained(path).eval()
    size = tokenizer.config.image_size
    return tokenizer, GVTImageProcessor(size={"height": size, "width": size})


__all__ = ["DEFAULT_MODEL_DIR", "DefaultModel", "check_model_dir", "export", "load_default", "load_vision_tokenizer"]
