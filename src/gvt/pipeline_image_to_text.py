"""GVTImageToTextPipeline: captions an image given no prompt at all.

transformers 5 redirects the `image-to-text` task to `image-text-to-text`, whose pipeline refuses an image without
text. This subclass supplies an empty prompt (the processor then lays out `[IMG] <image> [/IMG]` alone, LaVIT's
caption format). Routes that work (no patching of transformers):

- `pipeline("image-to-text", model=repo, trust_remote_code=True)`: the repo's `custom_pipelines` entry;
- `pipeline("image-text-to-text", model=repo, pipeline_class=GVTImageToTextPipeline)` after `import gvt`;
- `pipeline("image-text-to-text", model=repo)(image, text="")`, or with a question, or with chat messages.

Imports only transformers, so it can be copied into a Hub repo.
"""

import logging

from transformers.image_utils import valid_images
from transformers.pipelines import image_text_to_text
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline


class _PlainPromptIsNativeFilter(logging.Filter):
    """Drops the pipeline's advice to use chat messages: `[IMG] <image> [/IMG] prompt` is LaVIT's own layout."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not formatted as a chat" not in record.getMessage()


class GVTImageToTextPipeline(ImageTextToTextPipeline):
    """The image-text-to-text pipeline, with an empty prompt when only images are given."""

    def __call__(self, images=None, text=None, **kwargs):
        if images is not None and text is None and valid_images(images):
            text = [""] * len(images) if isinstance(images, (list, tuple)) else ""
        pipeline_logger = logging.getLogger(image_text_to_text.__name__)
        quiet = _PlainPromptIsNativeFilter()
        pipeline_logger.addFilter(quiet)
        try:
            return super().__call__(images, text=text, **kwargs)
        finally:
            pipeline_logger.removeFilter(quiet)


__all__ = ["GVTImageToTextPipeline"]
