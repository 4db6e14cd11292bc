"""GVTImageToTextPipeline: captions images, answers questions about them, and takes images in every form the
processor reads.

transformers 5 redirects the `image-to-text` task to `image-text-to-text`, whose pipeline refuses an image without
text and reads images with `transformers.image_utils.load_image` (paths, URLs, PIL only). This subclass

- supplies an empty prompt when only images are given (the processor then lays out `[IMG] <image> [/IMG]` alone,
  LaVIT's caption format), for one image, a list, a `datasets` image column or any iterable of images (a generator,
  a `KeyDataset`: the pipeline then streams, with `batch_size`);
- hands images to the processor unopened, so paths, http(s) URLs, PIL images (any mode), numpy arrays, torch
  tensors, encoded bytes and `datasets` image dicts all work, with the processor's conversion rules (transparency
  onto white, explicit bit depths).

Routes that work (no patching of transformers):

- `pipeline("image-to-text", model=repo, trust_remote_code=True)`: the repo's `custom_pipelines` entry;
- `pipeline("image-to-text" or "image-text-to-text", model=repo, pipeline_class=GVTImageToTextPipeline)` after
  `import gvt`;
- `pipeline("image-text-to-text", model=repo)(image, text="")`, or with a question, or with chat messages (the
  stock pipeline: images as paths, URLs or PIL images).

Imports only transformers, so it can be copied into a Hub repo.
"""

import logging
import os
from collections.abc import Iterable, Mapping

from transformers.image_utils import is_valid_image
from transformers.pipelines import image_text_to_text
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline
from transformers.utils.chat_template_utils import Chat


class _PlainPromptIsNativeFilter(logging.Filter):
    """Drops the pipeline's advice to use chat messages: `[IMG] <image> [/IMG] prompt` is LaVIT's own layout."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not formatted as a chat" not in record.getMessage()


def _is_one_image(item) -> bool:
    """One image in any form the processor reads (a 4-D array or tensor is a batch, not one image)."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        return True
    if isinstance(item, Mapping):  # a `datasets` image dict
        return "bytes" in item or "path" in item
    return is_valid_image(item) and getattr(item, "ndim", 3) <= 3


def _is_chat_or_keyed(images) -> bool:
    """Chat messages or `{"image": ..., "text": ...}` rows: the stock pipeline's own formats."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    if isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, (Chat, Mapping)) and not _is_one_image(first)


class GVTImageToTextPipeline(ImageTextToTextPipeline):
    """The image-text-to-text pipeline, with an empty prompt when only images are given and images read by the
    processor (see the module docstring)."""

    def __call__(self, images=None, text=None, **kwargs):
        if images is not None and text is None and not _is_chat_or_keyed(images):
            if _is_one_image(images):
                text = ""
            elif isinstance(images, (list, tuple)) or getattr(images, "ndim", 0) == 4:
                images = list(images)
                text = [""] * len(images)
            elif hasattr(images, "__len__") and hasattr(images, "__getitem__") and not hasattr(images, "__array__"):
                images = [images[index] for index in range(len(images))]  # e.g. a `datasets` image column
                text = [""] * len(images)
            elif isinstance(images, Iterable):  # a generator, a KeyDataset: stream rows through the pipeline
                images = ({"images": image, "text": ""} for image in images)
        pipeline_logger = logging.getLogger(image_text_to_text.__name__)
        quiet = _PlainPromptIsNativeFilter()
        pipeline_logger.addFilter(quiet)
        try:
            return super().__call__(images, text=text, **kwargs)
        finally:
            pipeline_logger.removeFilter(quiet)

    def preprocess(self, inputs=None, timeout=None, continue_final_message=None, **processing_kwargs):
        if not isinstance(inputs, Mapping) or "images" not in inputs:  # chat or text alone: the stock path
            return super().preprocess(
                inputs, timeout=timeout, continue_final_message=continue_final_message, **processing_kwargs
            )
        images, text = inputs["images"], inputs.get("text", "")
        processor_kwargs = processing_kwargs.pop("processor_kwargs", None)
        if processor_kwargs is None:
            processor_kwargs = processing_kwargs
        if isinstance(text, (list, tuple)) and len(text) > 1:
            processor_kwargs.setdefault("padding", True)
        model_inputs = self.processor(images=images, text=text, return_tensors="pt", **processor_kwargs)
        model_inputs = model_inputs.to(dtype=self.dtype)
        model_inputs["text"] = text
        return model_inputs


__all__ = ["GVTImageToTextPipeline"]
