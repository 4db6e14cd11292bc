"""GVTImageToTextPipeline: captions an image given no prompt at all.

transformers 5 redirects the `image-to-text` task to `image-text-to-text`, whose pipeline refuses an image without
text. This subclass supplies an empty prompt (the processor then lays out `[IMG] <image> [/IMG]` alone, LaVIT's
caption format). Routes that work (no patching of transformers):

- `pipeline("image-to-text", model=repo, trust_remote_code=True)`: the repo's `custom_pipelines` entry;
- `pipeline("image-text-to-text", model=repo, pipeline_class=GVTImageToTextPipeline)` after `import gvt`;
- `pipeline("image-text-to-text", model=repo)(image, text="")`, or with a question, or with chat messages.

Imports only transformers, so it can be copied into a Hub repo.
"""

from transformers.image_utils import valid_images
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline


class GVTImageToTextPipeline(ImageTextToTextPipeline):
    """The image-text-to-text pipeline, with an empty prompt when only images are given."""

    def __call__(self, images=None, text=None, **kwargs):
        if images is not None and text is None and valid_images(images):
            text = [""] * len(images) if isinstance(images, (list, tuple)) else ""
        return super().__call__(images, text=text, **kwargs)


__all__ = ["GVTImageToTextPipeline"]
