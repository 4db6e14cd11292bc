"""transformers' ImageProcessingTestMixin against GVTImageProcessor (a PIL-backend processor: no torchvision)."""

import unittest

import upstream_suites

from gvt import GVTImageProcessor

image_processing_common = upstream_suites.import_suite("tests.test_image_processing_common")
ImageProcessingTester = image_processing_common.ImageProcessingTester
ImageProcessingTestMixin = image_processing_common.ImageProcessingTestMixin


class GVTImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 2)
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 60)
        kwargs.setdefault("size", {"height": 28, "width": 28})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.48145466, 0.4578275, 0.40821073])
        kwargs.setdefault("image_std", [0.26862954, 0.26130258, 0.27577711])
        kwargs.setdefault("do_convert_rgb", True)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin looks the classes up by the test folder's name in transformers' own mapping of model types;
        # gvt's processor is registered with `AutoImageProcessor.register` instead.
        return {"pil": GVTImageProcessor}


class GVTImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = GVTImageProcessingTester

    @unittest.skip(
        "transformers' policy for models added to transformers itself (a torchvision backend); gvt's image processor "
        "is PIL-only by design, torchvision is not in this stack (see the README)"
    )
    def test_new_models_require_torchvision_backend(self):
        pass
